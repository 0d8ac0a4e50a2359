package topomap

import (
	"testing"
	"time"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/pipeline"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func testRules() Rules {
	cfg := testConfig()
	return Rules{StaleAfter: cfg.StaleAfter, ExpireAfter: cfg.ExpireAfter, OSDLatencyDegraded: cfg.OSDLatencyDegraded,
		ProbeRTTDegraded: cfg.ProbeRTTDegraded, FlowErrorDegraded: cfg.FlowErrorDegraded}
}

func newTestGraph() (*graph, *fakeClock) {
	clk := &fakeClock{t: testtime.Day.Add(time.Hour)}
	return newGraph(labInventory(), testRules(), clk.now), clk
}

// status flushes and returns the status of a node or edge ("" when absent).
func (g *graph) status(id string) string {
	g.flush()
	g.mu.Lock()
	defer g.mu.Unlock()
	if n, ok := g.nodes[id]; ok {
		return n.n.Status
	}
	if e, ok := g.edges[id]; ok {
		return e.e.Status
	}
	return ""
}

func TestStatusRules(t *testing.T) {
	meta := pipeline.Meta{Site: "nyc", Cluster: "vault", Node: "nyc-vault-1"}
	osd := func(up, in bool, commit float64) *pipeline.OSDStat {
		return &pipeline.OSDStat{M: meta, FSID: "f", OSD: 1, Up: up, In: in, CommitLatencyMs: commit}
	}
	flow := func(flows, drops, reqs, errs uint64) *pipeline.FlowEdge {
		return &pipeline.FlowEdge{M: pipeline.Meta{Cluster: "destroyer"}, Interval: 10 * time.Second, SourceNamespace: "a", SourceWorkload: "fe",
			DestNamespace: "a", DestWorkload: "be", Protocol: "TCP", Port: 80, Flows: flows, Drops: drops, Requests: reqs, Errors: errs}
	}
	probe := func(ok bool, rtt time.Duration) *pipeline.Probe {
		return &pipeline.Probe{M: pipeline.Meta{Site: "nyc"}, Vantage: "v", Method: "tcp", POP: "lon", Success: ok, RTT: rtt}
	}
	steer := func(w float64) *pipeline.SteeringDecision {
		return &pipeline.SteeringDecision{Service: "api.example.net.", ClientRegion: "eu-west", POP: "lon", NewWeight: w}
	}
	const osdID, flowID, probeID, steerID = "osd:f.1", "flow:workload:destroyer/a/fe->workload:destroyer/a/be:TCP/80", "probe:v->lon/tcp", "steer:eu-west->lon/api.example.net."
	cases := []struct {
		name string
		recs []pipeline.Record
		want map[string]string
	}{
		{"osd up and fast", []pipeline.Record{osd(true, true, 0.9)}, map[string]string{osdID: "ok", "node:nyc-vault-1": "ok", "storage:node:nyc-vault-1->" + osdID: "ok"}},
		{"osd slow", []pipeline.Record{osd(true, true, 40)}, map[string]string{osdID: "degraded", "node:nyc-vault-1": "degraded"}},
		{"osd out", []pipeline.Record{osd(true, false, 1)}, map[string]string{osdID: "degraded"}},
		{"osd down", []pipeline.Record{osd(false, false, 0)}, map[string]string{osdID: "down", "node:nyc-vault-1": "down", "cluster:vault": "down", "site:nyc": "degraded"}},
		{"tunnel both ends ok", []pipeline.Record{tunnel("nyc-1", "nyc", "lon-1", "london", "ok"), tunnel("lon-1", "london", "nyc-1", "nyc", "ok")},
			map[string]string{"tunnel:node:lon-1|node:nyc-1": "ok", "node:nyc-1": "ok", "site:london": "ok"}},
		{"tunnel one end down", []pipeline.Record{tunnel("nyc-1", "nyc", "lon-1", "london", "ok"), tunnel("lon-1", "london", "nyc-1", "nyc", "down")},
			map[string]string{"tunnel:node:lon-1|node:nyc-1": "down", "node:nyc-1": "down", "site:nyc": "degraded"}},
		{"tunnel down among ok", []pipeline.Record{tunnel("nyc-1", "nyc", "lon-1", "london", "down"), tunnel("nyc-1", "nyc", "par-1", "paris", "ok")},
			map[string]string{"node:nyc-1": "degraded", "node:par-1": "ok", "node:lon-1": "down"}},
		{"flow healthy", []pipeline.Record{flow(100, 0, 100, 1)}, map[string]string{flowID: "ok", "workload:destroyer/a/be": "ok"}},
		{"flow errors", []pipeline.Record{flow(100, 0, 100, 5)}, map[string]string{flowID: "degraded", "workload:destroyer/a/be": "degraded", "workload:destroyer/a/fe": "ok"}},
		{"flow some drops", []pipeline.Record{flow(100, 3, 0, 0)}, map[string]string{flowID: "degraded"}},
		{"flow all dropped", []pipeline.Record{flow(10, 10, 0, 0)}, map[string]string{flowID: "down", "workload:destroyer/a/be": "down"}},
		{"probe ok", []pipeline.Record{probe(true, 20*time.Millisecond)}, map[string]string{probeID: "ok", "pop:lon": "ok"}},
		{"a good DNS answer does not hold a failed POP up", []pipeline.Record{probe(false, 0),
			&pipeline.Probe{M: pipeline.Meta{Site: "nyc"}, Vantage: "v", Method: "dns", POP: "lon", ClientRegion: "eu-west", Success: true, RTT: time.Millisecond}},
			map[string]string{probeID: "down", "pop:lon": "down", "probe:v->lon/dns/eu-west": ""}},
		{"probe slow", []pipeline.Record{probe(true, time.Second)}, map[string]string{probeID: "degraded", "pop:lon": "degraded"}},
		{"probe failed", []pipeline.Record{probe(false, 0)}, map[string]string{probeID: "down", "pop:lon": "down", "site:london": "degraded"}},
		{"steer full", []pipeline.Record{steer(1)}, map[string]string{steerID: "ok", "region:eu-west": "ok"}},
		{"steer reduced", []pipeline.Record{steer(0.4)}, map[string]string{steerID: "degraded"}},
		{"steer drained", []pipeline.Record{steer(0)}, map[string]string{steerID: "down", "region:eu-west": "down"}},
		{"ceph warn", []pipeline.Record{&pipeline.CephHealth{M: pipeline.Meta{Cluster: "vault"}, Status: "HEALTH_WARN"}}, map[string]string{"cluster:vault": "degraded"}},
		{"nothing seen", nil, map[string]string{"site:tokyo": "unknown", "node:tyo-1": "unknown", "pop:par": "unknown"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, _ := newTestGraph()
			g.Consume(tc.recs)
			for id, want := range tc.want {
				if got := g.status(id); got != want {
					t.Errorf("%s: %q, want %q", id, got, want)
				}
			}
		})
	}
}

// TestUnknownReferences: what the inventory does not know is drawn as unknown, not dropped.
func TestUnknownReferences(t *testing.T) {
	g, _ := newTestGraph()
	g.Consume([]pipeline.Record{
		&pipeline.TunnelStat{M: pipeline.Meta{Site: "nyc", Node: "nyc-1"}, PublicKey: "Zm9yZWlnbi1wZWVyLWtleQ==", Status: "ok"},
		tunnel("nyc-1", "nyc", "ghost-7", "", "ok"),
		&pipeline.FlowEdge{M: pipeline.Meta{Cluster: "shadow"}, SourceNamespace: "x", SourceWorkload: "a", DestNamespace: "x", DestWorkload: "b", Flows: 1, Interval: time.Second},
		&pipeline.Probe{M: pipeline.Meta{Site: "tokyo"}, Vantage: "v", Method: "icmp", POP: "sin", Success: true, RTT: time.Millisecond},
		&pipeline.OSDStat{FSID: "f", OSD: 9, Host: "mystery-host", Up: true, In: true},
	})
	want := map[string]string{
		"node:?Zm9yZWln":                     "unknown", // peer key not in the inventory
		"tunnel:node:?Zm9yZWln|node:nyc-1":   "ok",
		"node:ghost-7":                       "unknown", // peer name not in the inventory
		"tunnel:node:ghost-7|node:nyc-1":     "ok",
		"cluster:shadow":                     "unknown",
		"workload:shadow/x/b":                "ok",
		"pop:sin":                            "unknown",
		"probe:v->sin/icmp":                  "ok",
		"node:mystery-host":                  "unknown",
		"storage:node:mystery-host->osd:f.9": "ok",
	}
	for id, st := range want {
		if got := g.status(id); got != st {
			t.Errorf("%s: %q, want %q", id, got, st)
		}
	}
	g.mu.Lock()
	label := g.nodes["node:?Zm9yZWln"].n.Label
	unmapped := g.unmapped["tunnel_peer"]
	g.mu.Unlock()
	if label != "unknown peer Zm9yZWln…" || unmapped != 1 {
		t.Errorf("unknown peer label %q, unmapped count %d", label, unmapped)
	}
}

func TestStaleAndExpired(t *testing.T) {
	g, clk := newTestGraph()
	g.Consume([]pipeline.Record{tunnel("nyc-1", "nyc", "ghost", "", "ok")})
	const id = "tunnel:node:ghost|node:nyc-1"
	if got := g.status(id); got != "ok" {
		t.Fatalf("fresh tunnel %q", got)
	}
	clk.t = clk.t.Add(testRules().StaleAfter + time.Second)
	g.age()
	if got := g.status(id); got != "unknown" {
		t.Errorf("stale tunnel %q, want unknown", got)
	}
	if got := g.status("node:nyc-1"); got != "unknown" {
		t.Errorf("node with only a stale tunnel %q, want unknown", got)
	}
	clk.t = clk.t.Add(testRules().ExpireAfter)
	g.age()
	g.age() // the edge goes first, then the unknown node it held
	_, _, rmNodes, rmEdges, _ := g.flush()
	if g.status(id) != "" || len(rmEdges) != 1 || len(rmNodes) != 1 || rmNodes[0] != "node:ghost" {
		t.Errorf("expired: removed nodes %v edges %v", rmNodes, rmEdges)
	}
	if g.status("node:nyc-1") == "" {
		t.Error("inventory node expired")
	}
}

func TestAlertsMarkElements(t *testing.T) {
	g, _ := newTestGraph()
	g.Consume([]pipeline.Record{&pipeline.Probe{M: pipeline.Meta{Site: "nyc"}, Vantage: "v", Method: "tcp", POP: "par", Success: true, RTT: time.Millisecond}})
	g.applyAlerts([]alerts.Alert{
		{Name: "SLOErrorBudgetBurn", Severity: alerts.SeverityPage, Labels: map[string]string{"slo": "api-availability", "pop": "par"}},
		{Name: "SLOErrorBudgetBurn", Severity: alerts.SeverityTicket, Labels: map[string]string{"service": "api.example.net."}},
	})
	if got := g.status("pop:par"); got != "down" {
		t.Errorf("pop with a page alert %q, want down", got)
	}
	if got := g.status("pop:lon"); got != "degraded" {
		t.Errorf("pop of a service with a ticket alert %q, want degraded", got)
	}
	g.mu.Lock()
	al := g.nodes["pop:par"].n.Alerts
	g.mu.Unlock()
	if len(al) != 2 || al[0] != "SLOErrorBudgetBurn (api-availability) [page]" || al[1] != "SLOErrorBudgetBurn [ticket]" {
		t.Errorf("alerts on pop:par = %q", al)
	}
	g.applyAlerts(nil)
	if got := g.status("pop:par"); got != "ok" {
		t.Errorf("pop after alerts resolved %q, want ok", got)
	}
}
