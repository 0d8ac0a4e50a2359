package lab

import (
	"context"
	"fmt"
	"time"

	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meridianhq/meridian/collectors/hubble/hubbletest"
)

// relay replays real flows into one cluster's Hubble Relay, with times shifted to now and
// the node names of that cluster.
type relay struct {
	cluster string
	srv     *hubbletest.Server
}

// flowsPerSecond is each lab relay's replay rate.
const flowsPerSecond = 50

func (l *Lab) startRelays(ctx context.Context, samples []*observer.GetFlowsResponse) error {
	for _, c := range l.inv.Clusters {
		if c.Name == "ny-vault" { // storage nodes run no workloads
			continue
		}
		srv := hubbletest.NewServer(nil)
		if err := srv.Start(); err != nil {
			return fmt.Errorf("lab: relay %s: %w", c.Name, err)
		}
		r := &relay{cluster: c.Name, srv: srv}
		l.relays = append(l.relays, r)
		go r.replay(ctx, samples)
	}
	return nil
}

func (r *relay) replay(ctx context.Context, samples []*observer.GetFlowsResponse) {
	defer r.srv.Stop()
	tick := time.NewTicker(time.Second / flowsPerSecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			m := proto.Clone(samples[i%len(samples)]).(*observer.GetFlowsResponse)
			ts := timestamppb.New(now)
			m.Time = ts
			node := r.cluster + "-node-1"
			m.NodeName = node
			if f := m.GetFlow(); f != nil {
				f.Time = ts
				f.NodeName = node
			}
			r.srv.Add(m)
		}
	}
}
