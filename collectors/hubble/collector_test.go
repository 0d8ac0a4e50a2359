package hubble

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/collectors/hubble/hubbletest"
	"github.com/meridianhq/meridian/collectors/shard"
	"github.com/meridianhq/meridian/collectors/shard/shardtest"
	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// sink is an Appender keeping what it is given.
type sink struct {
	mu    sync.Mutex
	flows []*pipeline.Flow
	edges []*pipeline.FlowEdge
}

func (s *sink) Append(_ context.Context, recs ...pipeline.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		switch r := r.(type) {
		case *pipeline.Flow:
			s.flows = append(s.flows, r)
		case *pipeline.FlowEdge:
			s.edges = append(s.edges, r)
		}
	}
	return nil
}

func (s *sink) counts(cluster string) (flows int, edgeFlows uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.flows {
		if f.M.Cluster == cluster {
			flows++
		}
	}
	for _, e := range s.edges {
		if e.M.Cluster == cluster {
			edgeFlows += e.Flows
		}
	}
	return flows, edgeFlows
}

// edgeSum adds up one workload pair's edges over all intervals.
type edgeSum struct {
	flows, requests, errors, drops uint64
	perSecond                      []uint64
	maxP99, minP50                 time.Duration
}

func (s *sink) edge(cluster, src, dst string, port uint16) edgeSum {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out edgeSum
	var last time.Time
	es := slices.Clone(s.edges)
	slices.SortFunc(es, func(a, b *pipeline.FlowEdge) int { return a.M.Time.Compare(b.M.Time) })
	for _, e := range es {
		if e.M.Cluster != cluster || e.SourceWorkload != src || e.DestWorkload != dst || e.Port != port {
			continue
		}
		out.flows += e.Flows
		out.requests += e.Requests
		out.errors += e.Errors
		out.drops += e.Drops
		// An interval emitted early (the relay looked idle) and its late flows give two
		// rows for one second: add them up.
		if n := len(out.perSecond); n > 0 && e.M.Time.Equal(last) {
			out.perSecond[n-1] += e.Flows
		} else {
			out.perSecond = append(out.perSecond, e.Flows)
		}
		last = e.M.Time
		out.maxP99 = max(out.maxP99, e.LatencyP99)
		if e.LatencyP50 > 0 && (out.minP50 == 0 || e.LatencyP50 < out.minP50) {
			out.minP50 = e.LatencyP50
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testConfig(relays ...RelayConfig) Config {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	cfg.Relays = relays
	cfg.Backfill = 100000
	cfg.EdgeGrace = 100 * time.Millisecond
	cfg.FlushInterval = 20 * time.Millisecond
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 100*time.Millisecond
	cfg.ConnectTimeout = 500 * time.Millisecond
	cfg.StateDir = "" // a test that keeps resume points sets its own directory
	return cfg
}

func startServer(t *testing.T, ring []*observer.GetFlowsResponse) *hubbletest.Server {
	t.Helper()
	s := hubbletest.NewServer(ring)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func startCollector(t testing.TB, cfg Config, app pipeline.Appender, inv inventory.View, owner shard.Owner) (*Collector, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg, Appender: app, Inventory: inv, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), c) })
	return c, reg
}

func concat(t *testing.T, names ...string) []*observer.GetFlowsResponse {
	var out []*observer.GetFlowsResponse
	for _, n := range names {
		out = append(out, load(t, n)...)
	}
	slices.SortStableFunc(out, func(a, b *observer.GetFlowsResponse) int { return a.GetTime().AsTime().Compare(b.GetTime().AsTime()) })
	return out
}

// TestCollectorEdges streams the real bookinfo, HTTP and DNS samples from two relays and
// checks the flows and the workload edges built from them.
func TestCollectorEdges(t *testing.T) {
	kind := startServer(t, load(t, "hubble-otel-basic-sample-400-tcp-flows.json"))
	gke := startServer(t, concat(t, "hubble-otel-basic-sample-348-http-flows.json", "hubble-otel-basic-sample-330-dns-flows.json"))
	var filters Filters
	if err := yaml.Unmarshal([]byte(`[{source_pod: ["bookinfo/"]}, {verdict: [FORWARDED, DROPPED]}]`), &filters); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(RelayConfig{Cluster: "kind", Address: kind.Addr(), Whitelist: filters}, RelayConfig{Cluster: "gke", Address: gke.Addr()})
	out := &sink{}
	inv := &inventory.Inventory{Clusters: []inventory.Cluster{{Name: "kind", Site: "nyc"}}}
	_, reg := startCollector(t, cfg, out, inventory.Static(inv), nil)

	waitFor(t, "all flows and edges", func() bool {
		kf, ke := out.counts("kind")
		gf, ge := out.counts("gke")
		return kf == 400 && ke == 400 && gf == 678 && ge == 678
	})

	req := kind.Requests()[0]
	if !req.GetFollow() || req.GetNumber() != 100000 || req.GetSince() != nil || len(req.GetWhitelist()) != 2 ||
		req.GetWhitelist()[0].GetSourcePod()[0] != "bookinfo/" || req.GetWhitelist()[1].GetVerdict()[1] != flowpb.Verdict_DROPPED {
		t.Errorf("first request: %v", req)
	}
	out.mu.Lock()
	for _, f := range out.flows {
		if want := map[string]string{"kind": "nyc", "gke": ""}[f.M.Cluster]; f.M.Site != want || f.M.Collector != "hubble/"+f.M.Cluster {
			t.Errorf("meta %+v", f.M)
			break
		}
	}
	out.mu.Unlock()

	// Counts per client -> server pair over the sample's four seconds, read off the raw
	// JSON: replies are folded onto the pair of the request they answer.
	for _, c := range []struct {
		src, dst        string
		port            uint16
		flows, requests uint64
		perSecond       []uint64
		minP50, maxP99  time.Duration
	}{
		{src: "productpage", dst: "reviews", port: 9080, flows: 98, requests: 4, perSecond: []uint64{20, 23, 22, 29, 4}},
		{src: "productpage", dst: "details", port: 9080, flows: 96},
		{src: "ratings", dst: "productpage", port: 9080, flows: 120, requests: 9},
		{src: "reviews", dst: "ratings", port: 9080, flows: 15, requests: 5, minP50: 1468500, maxP99: 3339100},
		// Envoy's responses carry the upstream pod name with the world identity.
		{src: "productpage", dst: "details-v1", port: 9080, flows: 18, requests: 9, minP50: 1804800, maxP99: 10708300},
		{src: "productpage", dst: "reviews-v3", port: 9080, flows: 6, requests: 3, minP50: 12593500, maxP99: 18508300},
		{src: "host", dst: "jaeger-default", port: 14269, flows: 8}, // app.kubernetes.io/name ranks above app
	} {
		got := out.edge("kind", c.src, c.dst, c.port)
		if got.flows != c.flows || got.requests != c.requests || got.errors != 0 || got.drops != 0 {
			t.Errorf("%s -> %s:%d: %+v, want %d flows, %d requests", c.src, c.dst, c.port, got, c.flows, c.requests)
		}
		if c.perSecond != nil && !slices.Equal(got.perSecond, c.perSecond) {
			t.Errorf("%s -> %s per second %v, want %v", c.src, c.dst, got.perSecond, c.perSecond)
		}
		if c.maxP99 > 0 && (!near(got.maxP99, c.maxP99) || !near(got.minP50, c.minP50)) {
			t.Errorf("%s -> %s latency p50 >= %v, p99 <= %v; want about %v and %v", c.src, c.dst, got.minP50, got.maxP99, c.minP50, c.maxP99)
		}
	}

	// gke: Prometheus scrapes answered 503 and DNS NXDOMAINs are errors.
	var requests, errors uint64
	out.mu.Lock()
	for _, e := range out.edges {
		if e.M.Cluster == "gke" {
			requests += e.Requests
			errors += e.Errors
		}
	}
	out.mu.Unlock()
	if requests != 338 || errors != 253 {
		t.Errorf("gke: %d requests, %d errors; want 338 (173 HTTP, 165 DNS) and 253 (151 HTTP 503, 102 NXDOMAIN)", requests, errors)
	}
	if dns := out.edge("gke", "node-local-dns", "kube-dns", 53); dns.errors == 0 || dns.requests == 0 {
		t.Errorf("node-local-dns -> kube-dns:53: %+v", dns)
	}
	if got := promtest.Sum(t, reg, "meridian_hubble_flows_received_total", "relay", "gke"); got != 678 {
		t.Errorf("received %v", got)
	}
}

// near reports whether a sketch quantile is within its bucket error of the exact value.
func near(got, want time.Duration) bool {
	return got >= want*95/100 && got <= want*105/100
}

// TestReconnectExactlyOnce stops the relay in the middle of a stream, adds flows while it
// is down, and restarts it: every flow it holds is stored once, including a distinct flow
// sharing the resume timestamp.
func TestReconnectExactlyOnce(t *testing.T) {
	ring := load(t, "hubble-otel-basic-sample-400-tcp-flows.json")
	// Two flows at the boundary timestamp, as two nodes can report.
	ring[200].GetFlow().Time = ring[199].GetFlow().GetTime()
	ring[200].Time = ring[199].GetTime()
	later := load(t, "hubble-otel-basic-sample-400-icmpv4-flows.json")
	srv := hubbletest.NewServer(slices.Clone(ring))
	srv.Hold(200)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	out := &sink{}
	c, reg := startCollector(t, testConfig(RelayConfig{Cluster: "kind", Address: srv.Addr()}), out, nil, nil)
	waitFor(t, "the first 200 flows", func() bool { f, _ := out.counts("kind"); return f == 200 })
	srv.Stop()
	waitFor(t, "the collector to see the relay go", func() bool { return promtest.Sum(t, reg, "meridian_hubble_relay_errors_total", "relay", "kind") >= 1 })
	if st := c.Status()[0]; st.Connected || !st.LastFlow.Equal(ring[199].GetFlow().GetTime().AsTime()) || st.LastError == "" {
		t.Errorf("status while down: %+v", st)
	}
	srv.Add(later...)
	srv.Hold(-1)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(ring), later...)
	waitFor(t, "the relay's whole ring", func() bool {
		return promtest.Sum(t, reg, "meridian_hubble_flows_received_total", "relay", "kind")+promtest.Sum(t, reg, "meridian_hubble_flows_duplicate_total", "relay", "kind") == float64(srv.Sent()) &&
			srv.Sent() == 200+len(all)-199
	})
	waitFor(t, "flows appended", func() bool { f, _ := out.counts("kind"); return f >= len(all) })

	resumedOnce(t, srv, reg, out, all, ring[199].GetFlow().GetTime().AsTime())
}

// resumedOnce checks a stream resumed once at since (inclusive): the second request
// asked for the flows since then, the one flow repeated at since was dropped, and the
// stored flows are want, in order, each once.
func resumedOnce(t *testing.T, srv *hubbletest.Server, reg *prometheus.Registry, out *sink, want []*observer.GetFlowsResponse, since time.Time) {
	t.Helper()
	if reqs := srv.Requests(); len(reqs) != 2 || !reqs[1].GetSince().AsTime().Equal(since) {
		t.Fatalf("requests %v, want the second since %v", reqs, since)
	}
	if d := promtest.Sum(t, reg, "meridian_hubble_flows_duplicate_total", "relay", "kind"); d != 1 {
		t.Errorf("%v duplicates dropped, want 1 (the flow at the resume time)", d)
	}
	p := NewParser(nil)
	out.mu.Lock()
	defer out.mu.Unlock()
	if len(out.flows) != len(want) {
		t.Fatalf("%d flows stored, want %d", len(out.flows), len(want))
	}
	for i, r := range want {
		w := decode(t, p, r.GetFlow(), "kind", time.Time{})
		if got := out.flows[i]; dump(*got) != dump(withMeta(w, got.M)) {
			t.Fatalf("flow %d:\n got %s\nwant %s", i, dump(*got), dump(w))
		}
	}
}

// TestResumeAcrossRestart stops the collector mid-stream and starts a new one with the
// same state directory, as an upgrade of Meridian would: the new one asks the relay for
// the flows since the old one's last, and the flows stored over both runs are the
// relay's ring, each once. An unreadable resume point is counted and backfill used.
func TestResumeAcrossRestart(t *testing.T) {
	ring := load(t, "hubble-otel-basic-sample-400-tcp-flows.json")
	ring[200].GetFlow().Time = ring[199].GetFlow().GetTime() // two flows at the resume time
	ring[200].Time = ring[199].GetTime()
	srv := hubbletest.NewServer(slices.Clone(ring))
	srv.Hold(200)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	cfg := testConfig(RelayConfig{Cluster: "kind", Address: srv.Addr()})
	cfg.StateDir = t.TempDir()
	state := filepath.Join(cfg.StateDir, "kind.json")

	out := &sink{}
	first, _ := startCollector(t, cfg, out, nil, nil)
	waitFor(t, "the first 200 flows", func() bool { f, _ := out.counts("kind"); return f == 200 })
	if err := services.StopAndAwaitTerminated(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no resume point after a stop: %v", err)
	}

	srv.Hold(-1)
	_, reg := startCollector(t, cfg, out, nil, nil)
	waitFor(t, "the rest of the ring", func() bool { f, _ := out.counts("kind"); return f >= len(ring) })
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("resume point still there while running (a crash would resume from it again): %v", err)
	}
	resumedOnce(t, srv, reg, out, ring, ring[199].GetFlow().GetTime().AsTime())

	if err := os.WriteFile(state, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, reg = startCollector(t, cfg, &sink{}, nil, nil)
	waitFor(t, "a request after the unreadable resume point", func() bool { return len(srv.Requests()) == 3 })
	if r := srv.Requests()[2]; r.GetSince() != nil || r.GetNumber() != cfg.Backfill {
		t.Errorf("request %v, want backfill", r)
	}
	if n := promtest.Sum(t, reg, "meridian_hubble_checkpoint_errors_total", "relay", "kind"); n != 1 {
		t.Errorf("checkpoint errors %v, want 1", n)
	}
}

// TestRelaysFollowOwnership shards two relays as the collector ring would: only the
// owned relay is streamed; when ownership moves, the other starts and the first stops,
// and a relay that comes back starts from backfill (the other replica stored the flows
// in between).
func TestRelaysFollowOwnership(t *testing.T) {
	ring := load(t, "hubble-otel-basic-sample-400-tcp-flows.json")
	a, b := startServer(t, ring[:100]), startServer(t, ring[100:200])
	owner := &shardtest.Owner{}
	owner.Set("a")
	out := &sink{}
	_, reg := startCollector(t, testConfig(RelayConfig{Cluster: "a", Address: a.Addr()}, RelayConfig{Cluster: "b", Address: b.Addr()}), out, nil, owner)
	waitFor(t, "relay a's flows", func() bool { f, _ := out.counts("a"); return f == 100 })
	if len(b.Requests()) != 0 || promtest.Sum(t, reg, "meridian_hubble_relay_owned", "relay", "b") != 0 ||
		promtest.Sum(t, reg, "meridian_hubble_relay_owned", "relay", "a") != 1 {
		t.Fatalf("relay b, not owned: %d requests, owned gauge %v", len(b.Requests()), promtest.Sum(t, reg, "meridian_hubble_relay_owned", "relay", "b"))
	}

	owner.Set("b")
	waitFor(t, "relay b's flows after it moved here", func() bool { f, _ := out.counts("b"); return f == 100 })
	waitFor(t, "relay a stopped after it moved away", func() bool {
		return promtest.Sum(t, reg, "meridian_hubble_relay_connected", "relay", "a") == 0
	})

	owner.Set("a", "b")
	waitFor(t, "relay a streamed again", func() bool { return len(a.Requests()) == 2 })
	if r := a.Requests()[1]; r.GetSince() != nil || r.GetNumber() == 0 {
		t.Errorf("relay a back: request %v, want backfill, not since its old resume point", r)
	}
}

func withMeta(f pipeline.Flow, m pipeline.Meta) pipeline.Flow {
	if f.M.Time.Equal(m.Time) {
		f.M = m
	}
	return f
}

// TestBadRelays runs a good relay beside one that answers with junk and one that accepts
// connections and never speaks: the good one delivers everything, the bad ones are
// retried with a clear error, nothing crashes.
func TestBadRelays(t *testing.T) {
	good := startServer(t, load(t, "hubble-otel-basic-sample-400-tcp-flows.json"))
	junk := listen(t, func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\nthis is not HTTP/2\x00\xff")) })
	stall := listen(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	// A relay whose flows are broken: no endpoints, unknown enums, no time.
	broken := startServer(t, []*observer.GetFlowsResponse{
		{ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: &flowpb.Flow{Verdict: 77, TrafficDirection: 9, NodeName: "x/n1"}}},
		{ResponseTypes: &observer.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 42}}},
		{ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED, DropReasonDesc: 1234,
			Source: &flowpb.Endpoint{PodName: "a-1"}, L4: &flowpb.Layer4{}}}},
	})
	cfg := testConfig(
		RelayConfig{Cluster: "good", Address: good.Addr()},
		RelayConfig{Cluster: "junk", Address: junk},
		RelayConfig{Cluster: "stall", Address: stall},
		RelayConfig{Cluster: "broken", Address: broken.Addr()},
	)
	out := &sink{}
	c, reg := startCollector(t, cfg, out, nil, nil)
	waitFor(t, "good flows", func() bool { f, e := out.counts("good"); return f == 400 && e == 400 })
	waitFor(t, "retries of the bad relays", func() bool {
		return promtest.Sum(t, reg, "meridian_hubble_relay_errors_total", "relay", "junk") >= 2 && promtest.Sum(t, reg, "meridian_hubble_relay_errors_total", "relay", "stall") >= 2
	})
	for _, st := range c.Status() {
		switch st.Name {
		case "junk", "stall":
			if !strings.Contains(st.LastError, "GetFlows 127.0.0.1:") || st.Connected {
				t.Errorf("%s: %+v", st.Name, st)
			}
		}
	}
	waitFor(t, "broken flows", func() bool { f, _ := out.counts("broken"); return f == 2 })
	out.mu.Lock()
	var broke []*pipeline.Flow
	for _, f := range out.flows {
		if f.M.Cluster == "broken" {
			broke = append(broke, f)
		}
	}
	out.mu.Unlock()
	if broke[0].Verdict != "77" || broke[0].Direction != "9" || broke[0].M.Node != "n1" || broke[0].M.Time.IsZero() ||
		broke[1].DropReason != "1234" || broke[1].Source.Workload != "a-1" {
		t.Errorf("broken flows: %+v\n%+v", broke[0], broke[1])
	}
	if got := promtest.Sum(t, reg, "meridian_hubble_lost_events_total", "relay", "broken"); got != 42 {
		t.Errorf("lost events %v", got)
	}
	if got := promtest.Sum(t, reg, "meridian_hubble_flows_incomplete_total", "relay", "broken"); got != 6 { // time x2, source, destination x2, l4
		t.Errorf("incomplete parts counted %v, want 6", got)
	}
}

// listen serves raw TCP on 127.0.0.1 with handle until the test ends.
func listen(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}

// TestEdgeBounds feeds 100,000 distinct workload pairs: each interval keeps at most
// max_pairs of them and counts the rest in the "other" edge; open intervals stay bounded.
func TestEdgeBounds(t *testing.T) {
	var overflow int
	a := newEdgeAggregator(pipeline.Meta{Cluster: "c"}, time.Second, 0, 1000, 4, func(n int) { overflow += n })
	t0 := testtime.Day
	var edges []pipeline.Record
	maxOpen, maxPairs := 0, 0
	for i := range 100000 {
		f := &pipeline.Flow{M: pipeline.Meta{Time: t0.Add(time.Duration(i%50) * time.Second / 5)}, L4Protocol: "TCP", DestinationPort: 80,
			Source: pipeline.Endpoint{Workload: fmt.Sprintf("w%d", i)}, Destination: pipeline.Endpoint{Workload: "db"}}
		edges = append(edges, a.add(f, false, false)...)
		maxOpen = max(maxOpen, len(a.windows))
		for _, w := range a.windows {
			maxPairs = max(maxPairs, len(w.edges))
		}
	}
	edges = append(edges, a.flush()...)
	var flows, other uint64
	for _, r := range edges {
		e := r.(*pipeline.FlowEdge)
		flows += e.Flows
		if e.SourceWorkload == OtherWorkload {
			other += e.Flows
		}
	}
	if flows != 100000 || maxOpen > 4 || maxPairs > 1001 || other != uint64(overflow) || other == 0 {
		t.Errorf("flows %d, max open %d, max pairs %d, other %d (counted %d)", flows, maxOpen, maxPairs, other, overflow)
	}
}

// TestEdgeRepeats folds runs of one pair, the shortcut for consecutive flows of a
// connection, with one pair allowed per window: every flow of the second pair is counted
// on the overflow edge and by the overflow counter, and each window's counts are its own.
// A flow to or from the same workload name in another cluster is another pair, even right
// after.
func TestEdgeRepeats(t *testing.T) {
	var overflow int
	a := newEdgeAggregator(pipeline.Meta{Cluster: "c"}, time.Second, 0, 1, 4, func(n int) { overflow += n })
	flow := func(sec int, src string) *pipeline.Flow {
		return &pipeline.Flow{M: pipeline.Meta{Time: testtime.Day.Add(time.Duration(sec) * time.Second)}, L4Protocol: "TCP",
			DestinationPort: 80, Source: pipeline.Endpoint{Workload: src, Cluster: "c"}, Destination: pipeline.Endpoint{Workload: "db", Cluster: "c"}}
	}
	far, near := flow(1, "a"), flow(1, "a")
	far.Destination.Cluster, near.Source.Cluster = "far", "near"
	var edges []pipeline.Record
	for _, f := range []*pipeline.Flow{flow(0, "a"), flow(0, "a"), flow(0, "b"), flow(0, "b"), flow(0, "b"), flow(0, "a"), flow(1, "a"), flow(1, "a"), far, far, near} {
		edges = append(edges, a.add(f, false, false)...)
	}
	edges = append(edges, a.flush()...)
	got := map[string]uint64{}
	for _, r := range edges {
		e := r.(*pipeline.FlowEdge)
		got[fmt.Sprintf("%d %s<%s>%s", e.M.Time.Sub(testtime.Day)/time.Second, e.SourceCluster, e.SourceWorkload, e.DestCluster)] += e.Flows
	}
	want := map[string]uint64{"0 <a>": 3, "0 <" + OtherWorkload + ">": 3, "1 <a>": 2, "1 <" + OtherWorkload + ">": 3}
	if fmt.Sprint(got) != fmt.Sprint(want) || overflow != 6 {
		t.Errorf("edges %v, overflow %d; want %v, 6", got, overflow, want)
	}
}

// TestEdgeDestCluster: a flow whose server is in another cluster of the mesh is an edge of
// its own, keyed and stored with that cluster, its reply folded onto it; a server in the
// relay's own cluster, or an end whose cluster is unknown, is the same cluster. The other
// view: a flow into the relay's cluster from a client of another (the server's relay) is
// keyed and stored with the client's cluster, its reply folded onto it.
func TestEdgeDestCluster(t *testing.T) {
	a := newEdgeAggregator(pipeline.Meta{Cluster: "ny"}, time.Second, 0, 100, 4, func(int) {})
	at := testtime.Day
	ep := func(w, c string) pipeline.Endpoint {
		return pipeline.Endpoint{Namespace: "shop", Workload: w, Cluster: c}
	}
	flow := func(src, dst pipeline.Endpoint, reply bool) *pipeline.Flow {
		f := &pipeline.Flow{M: pipeline.Meta{Time: at}, L4Protocol: "TCP", Source: src, Destination: dst, SourcePort: 40000, DestinationPort: 80, IsReply: reply}
		if reply {
			f.SourcePort, f.DestinationPort = 80, 40000
		}
		return f
	}
	var edges []pipeline.Record
	for _, f := range []*pipeline.Flow{
		flow(ep("web", "ny-cilium"), ep("db", "nbg"), false), // to another cluster
		flow(ep("db", "nbg"), ep("web", "ny-cilium"), true),  // its reply
		flow(ep("web", "ny-cilium"), ep("db", "ny-cilium"), false),
		flow(ep("web", "ny-cilium"), ep("db", "ny"), false),                 // the relay's cluster by name
		flow(pipeline.Endpoint{Workload: "world"}, ep("db", "nbg"), false),  // no cluster at the source
		flow(ep("web", "nbg"), ep("db", "ny"), false),                       // from another cluster
		flow(ep("db", "ny"), ep("web", "nbg"), true),                        // its reply
		flow(ep("web", "nbg"), pipeline.Endpoint{Workload: "world"}, false), // no cluster at the server
	} {
		edges = append(edges, a.add(f, false, false)...)
	}
	edges = append(edges, a.flush()...)
	got := map[string]uint64{}
	for _, r := range edges {
		e := r.(*pipeline.FlowEdge)
		got[fmt.Sprintf("%s|%s/%s->%s/%s@%s:%d", e.M.Cluster, e.SourceCluster, e.SourceWorkload, e.DestCluster, e.DestWorkload, e.Protocol, e.Port)] += e.Flows
	}
	want := map[string]uint64{"ny|/web->nbg/db@TCP:80": 2, "ny|/web->/db@TCP:80": 1, "ny|ny-cilium/web->/db@TCP:80": 1, "ny|/world->/db@TCP:80": 1,
		"ny|nbg/web->/db@TCP:80": 2, "ny|/web->/world@TCP:80": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("edges %v\nwant %v", got, want)
	}
}

func TestConfig(t *testing.T) {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	err := yaml.Unmarshal([]byte(`
relays:
  - cluster: kind
    address: 127.0.0.1:4245
    tls_enabled: true
    tls_ca_path: /etc/hubble/ca.crt
    whitelist:
      - source_pod: ["bookinfo/"]
        verdict: [DROPPED]
flow_sample_rate: 0.5
overload: sample
`), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RelayFlag = []string{"gke=127.0.0.1:4246"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Relays) != 2 || cfg.Relays[0].Name != "kind" || cfg.Relays[0].Whitelist[0].GetVerdict()[0] != flowpb.Verdict_DROPPED ||
		cfg.FlowSampleRate != 0.5 || cfg.EdgeInterval != time.Second || cfg.Overload != OverloadSample || cfg.OverloadSampleRate != 0.1 {
		t.Errorf("config %+v", cfg)
	}
	if on, tl := cfg.tls(cfg.Relays[0]); !on || tl.CAPath != "/etc/hubble/ca.crt" {
		t.Errorf("tls %v %+v", on, tl)
	}
	err = yaml.Unmarshal([]byte("relays:\n  - cluster: a\n    address: b\n    blacklist:\n      - source_pood: [x]\n"), &Config{})
	if err == nil || !strings.Contains(err.Error(), "line 5") || !strings.Contains(err.Error(), "source_pood") {
		t.Errorf("misspelt filter: %v", err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.FlowSampleRate = 2 },
		func(c *Config) { c.Overload = "drop" },
		func(c *Config) { c.OverloadSampleRate = -1 },
		func(c *Config) { c.Relays = append(c.Relays, RelayConfig{Cluster: "kind", Address: "x"}) },
		func(c *Config) { c.RelayFlag = []string{"nocluster"} },
	} {
		c := cfg
		c.Relays = slices.Clone(cfg.Relays)
		bad(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "hubble.") {
			t.Errorf("want an error naming the field, got %v", err)
		}
	}
}
