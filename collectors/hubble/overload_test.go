package hubble

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/testlog"
	"github.com/meridianhq/meridian/pipeline"
)

// manyFlows is n copies of the samples, re-timed 100 µs apart ending now, with one lost
// events report of lost flows in the middle.
func manyFlows(t *testing.T, n int, lost uint64) []*observer.GetFlowsResponse {
	smp, err := loadSamples()
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Duration(n) * 100 * time.Microsecond)
	var out []*observer.GetFlowsResponse
	for i := range n {
		m := proto.Clone(smp[i%len(smp)]).(*observer.GetFlowsResponse)
		ts := timestamppb.New(base.Add(time.Duration(i) * 100 * time.Microsecond))
		m.Time, m.GetFlow().Time = ts, ts
		out = append(out, m)
		if i == n/2 {
			out = append(out, &observer.GetFlowsResponse{Time: ts, NodeName: "kind/n1",
				ResponseTypes: &observer.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
					Source: flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, NumEventsLost: lost}}})
		}
	}
	return out
}

// TestOverload holds the pipeline while a relay streams: flows arrive faster than they
// are stored, the receiver fills the inbox and waits (the relay is slowed down by gRPC
// flow control, memory stays bounded), and the collector says so with the gauge and a
// log line, then again when it has caught up. With backpressure every flow is stored
// once the pipeline takes them; with sample, part of the raw flows is not stored while
// overloaded, and the edges still count every flow and say how many raw flows they lack.
// A lost events report is counted on the lost edge either way.
func TestOverload(t *testing.T) {
	const n, lost = 12000, 37
	for _, mode := range []string{OverloadBackpressure, OverloadSample} {
		t.Run(mode, func(t *testing.T) {
			srv := startServer(t, manyFlows(t, n, lost))
			release := make(chan struct{})
			out := &sink{}
			held := pipeline.AppenderFunc(func(ctx context.Context, recs ...pipeline.Record) error {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
				return out.Append(ctx, recs...)
			})
			cfg := testConfig(RelayConfig{Cluster: "kind", Address: srv.Addr()})
			cfg.Overload, cfg.OverloadSampleRate = mode, 0.25
			var logs testlog.Buffer
			reg := prometheus.NewRegistry()
			c, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg, Appender: held})
			if err != nil {
				t.Fatal(err)
			}
			if err := services.StartAndAwaitRunning(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), c) })

			in := c.relays[0].in
			waitFor(t, "the inbox to fill while the pipeline is held", func() bool {
				in.mu.Lock()
				defer in.mu.Unlock()
				return in.full
			})
			in.mu.Lock()
			inboxHeld := len(in.buf)
			in.mu.Unlock()
			if inboxHeld > inboxBytes+64<<10 {
				t.Errorf("inbox holds %d bytes, bound %d", inboxHeld, inboxBytes)
			}
			close(release)
			waitFor(t, "every flow in the edges", func() bool {
				_, e := out.counts("kind")
				return e == n+lost
			})
			waitFor(t, "the end of the overload", func() bool {
				return strings.Contains(logs.String(), "caught up") && promtest.Sum(t, reg, "meridian_hubble_overloaded", "relay", "kind") == 0
			})
			if !strings.Contains(logs.String(), "faster than they are stored") {
				t.Errorf("no overload log line:\n%s", logs.String())
			}
			if s := promtest.Sum(t, reg, "meridian_hubble_overload_seconds_total", "relay", "kind"); s <= 0 {
				t.Errorf("overload seconds %v", s)
			}

			stored, _ := out.counts("kind")
			var sampled, lostFlows uint64
			out.mu.Lock()
			for _, e := range out.edges {
				sampled += e.Sampled
				if e.SourceWorkload == LostWorkload && e.DestWorkload == LostWorkload {
					lostFlows += e.Flows
				}
			}
			out.mu.Unlock()
			shed := promtest.Sum(t, reg, "meridian_hubble_flows_sampled_total", "relay", "kind")
			if lostFlows != lost || sampled != uint64(n-stored)+lost || shed != float64(n-stored) {
				t.Errorf("%d raw flows stored of %d; edges: %d sampled, %d lost; metric: %v sampled", stored, n, sampled, lostFlows, shed)
			}
			switch mode {
			case OverloadBackpressure:
				if stored != n {
					t.Errorf("backpressure stored %d raw flows, want all %d", stored, n)
				}
			case OverloadSample:
				if stored >= n || stored < n/4 {
					t.Errorf("sample stored %d raw flows of %d, want fewer, at least a quarter", stored, n)
				}
			}
		})
	}
}
