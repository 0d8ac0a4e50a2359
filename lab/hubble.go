package lab

import (
	"context"
	"fmt"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meridianhq/meridian/collectors/hubble/hubbletest"
)

// relay replays real flows into one cluster's Hubble Relay, with times shifted to now and
// the node names of that cluster. Like a real relay it keeps a bounded ring of the latest
// flows (hubbletest.DefaultCapacity), not every flow it ever replayed.
type relay struct {
	cluster string
	srv     *hubbletest.Server
	// impaired reports a failure beneath the cluster's workloads (see impairs).
	impaired func() bool
}

// flowsPerSecond is each lab relay's replay rate.
const flowsPerSecond = 50

func (l *Lab) startRelays(ctx context.Context, samples []*observer.GetFlowsResponse) error {
	samples = succeeded(samples)
	if len(samples) == 0 {
		return fmt.Errorf("lab: the Hubble capture has no successful exchange to replay")
	}
	cephSites := map[string]bool{}
	for _, n := range l.inv.Nodes {
		if n.CephHost != "" {
			cephSites[n.Site] = true
		}
	}
	for _, c := range l.inv.Clusters {
		if c.Name == "ny-vault" { // storage nodes run no workloads
			continue
		}
		srv := hubbletest.NewServer(nil).WithCapacity(hubbletest.DefaultCapacity)
		if err := srv.Start(); err != nil {
			return fmt.Errorf("lab: relay %s: %w", c.Name, err)
		}
		r := &relay{cluster: c.Name, srv: srv, impaired: func() bool { return l.state.impairs(c.Site, cephSites[c.Site]) }}
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
				if http := f.GetL7().GetHttp(); http != nil && f.GetL7().GetType() == flowpb.L7FlowType_RESPONSE && r.impaired() {
					http.Code = 503 // the request timed out on the failure beneath
				}
			}
			r.srv.Add(m)
		}
	}
}

// healthyLatency is the longest answer a healthy exchange takes: the service latency SLO's
// threshold (alerts/slos/service.yaml).
const healthyLatency = 500 * time.Millisecond

// succeeded keeps the flows of the capture's healthy exchanges. The capture (hubble-otel's
// 348 HTTP flows) comes from a sick mesh: its sidecars answered 151 of 173 requests with
// 503, and one of the two productpage answers took 3 s. Replayed as the calm world, it
// burnt every service's error and latency SLOs, fired about 140 alerts and painted every
// site degraded. A healthy world replays only the exchanges answered without error within
// healthyLatency; a sick exchange is dropped with its request (same connection, reversed).
func succeeded(samples []*observer.GetFlowsResponse) []*observer.GetFlowsResponse {
	// HTTP/1.1 answers in request order on a connection: the k-th answer on a connection
	// is to the k-th request on it.
	pending := map[string][]int{} // connection "client>server" -> indexes of unanswered requests
	drop := map[int]bool{}
	for i, m := range samples {
		f := m.GetFlow()
		l7 := f.GetL7()
		switch l7.GetType() {
		case flowpb.L7FlowType_REQUEST:
			c := endpoint(f, true) + ">" + endpoint(f, false)
			pending[c] = append(pending[c], i)
		case flowpb.L7FlowType_RESPONSE:
			c := endpoint(f, false) + ">" + endpoint(f, true)
			req := -1
			if q := pending[c]; len(q) > 0 {
				req, pending[c] = q[0], q[1:]
			}
			if l7.GetHttp().GetCode() >= 500 || l7.GetDns().GetRcode() != 0 || l7.GetLatencyNs() > uint64(healthyLatency) {
				drop[i], drop[req] = true, true
			}
		}
	}
	var out []*observer.GetFlowsResponse
	for i, m := range samples {
		if !drop[i] {
			out = append(out, m)
		}
	}
	return out
}

// endpoint is a flow's source (or destination) address and TCP or UDP port.
func endpoint(f *flowpb.Flow, source bool) string {
	ip, tcp, udp := f.GetIP().GetDestination(), f.GetL4().GetTCP(), f.GetL4().GetUDP()
	port := tcp.GetDestinationPort() + udp.GetDestinationPort()
	if source {
		ip, port = f.GetIP().GetSource(), tcp.GetSourcePort()+udp.GetSourcePort()
	}
	return fmt.Sprintf("%s:%d", ip, port)
}
