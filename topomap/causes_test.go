package topomap

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/pipeline"
)

// calmLab is the lab with every tunnel, OSD, probe and weight healthy, and the bookinfo
// flows in destroyer (nyc) without errors.
func calmLab(t *testing.T, now time.Time) []pipeline.Record {
	var recs []pipeline.Record
	for _, r := range labRecords(now) {
		if d, ok := r.(*pipeline.SteeringDecision); ok {
			d.NewWeight = 1 // the lab's RTT shift away from lon is a degraded arrow; calm has none
		}
		recs = append(recs, r)
	}
	for _, e := range bookinfoFlowEdges(t, "destroyer", "nyc") {
		e.M.Time, e.Errors, e.Drops = now, 0, 0
		recs = append(recs, e)
	}
	return recs
}

// erroring is the bookinfo flows again, now 20 % of their requests failing.
func erroring(t *testing.T, now time.Time) []pipeline.Record {
	var recs []pipeline.Record
	for _, e := range bookinfoFlowEdges(t, "destroyer", "nyc") {
		e.M.Time, e.Drops = now, 0
		e.Requests = max(e.Requests, 10)
		e.Errors = e.Requests / 5
		recs = append(recs, e)
	}
	return recs
}

func testGraph(recs []pipeline.Record) *graph {
	cfg := testConfig()
	g := newGraph(labInventory(), Rules{StaleAfter: cfg.StaleAfter, ExpireAfter: cfg.ExpireAfter, OSDLatencyDegraded: cfg.OSDLatencyDegraded,
		ProbeRTTDegraded: cfg.ProbeRTTDegraded, FlowErrorDegraded: cfg.FlowErrorDegraded}, time.Now)
	g.Consume(recs)
	g.flush()
	return g
}

func TestCalmNamesNoCause(t *testing.T) {
	now := time.Now()
	// Steering preferring the nearer POP (an arrow reduced by RTT) is calm too: the arrow
	// and its region are drawn degraded, but no failure lies beneath them.
	rttShift := testGraph(append(calmLab(t, now), &pipeline.SteeringDecision{M: pipeline.Meta{Time: now}, Service: "api.example.net.",
		ClientRegion: "eu-west", POP: "lon", OldWeight: 1, NewWeight: 0.6, Cause: "rtt", Reason: "lon RTT above par"}))
	if n := rttShift.nodes[regionID("eu-west")].n; !bad(n.Status) || n.Causes != nil {
		t.Errorf("eu-west steered by RTT: %s, causes %v; want degraded with no cause", n.Status, n.Causes)
	}
	g := testGraph(calmLab(t, now))
	for id, ns := range g.nodes {
		if bad(ns.n.Status) || len(ns.n.Causes) > 0 {
			t.Errorf("calm lab: %s is %s with causes %v", id, ns.n.Status, ns.n.Causes)
		}
	}
	for id, es := range g.edges {
		if bad(es.e.Status) || len(es.e.Causes) > 0 {
			t.Errorf("calm lab: %s is %s with causes %v", id, es.e.Status, es.e.Causes)
		}
	}
}

func TestTunnelFailureNamesTunnel(t *testing.T) {
	now := time.Now()
	g := testGraph(append(calmLab(t, now), erroring(t, now)...))
	flows := 0
	for id, es := range g.edges {
		if es.e.Kind == KindFlow {
			flows++
			if es.e.Status != pipeline.StatusDegraded || es.e.Causes != nil {
				t.Errorf("erroring flow %s with healthy tunnels: %s, causes %v; want degraded, no cause", id, es.e.Status, es.e.Causes)
			}
		}
	}
	if flows == 0 {
		t.Fatal("no bookinfo flows")
	}
	// The tunnel from nyc (destroyer's machine) to london fails: the flows' errors are
	// put on it, in the delta that carries the tunnel, though no flow changed status.
	g.Consume([]pipeline.Record{&pipeline.TunnelStat{M: pipeline.Meta{Time: now, Site: "london", Cluster: "edge-lon", Node: "lon-1"},
		Interface: "wg0", PeerNode: "nyc-1", PeerSite: "nyc", Status: pipeline.StatusDown}})
	_, edges, _, _, _ := g.flush()
	named := 0
	for _, e := range edges {
		if e.Kind != KindFlow {
			continue
		}
		named++
		if len(e.Causes) == 0 || e.Causes[0].ID != failedTunnel || e.Causes[0].Status != pipeline.StatusDown || e.Causes[0].Since == 0 ||
			!strings.Contains(e.Causes[0].Evidence, "tunnel_stats") {
			t.Errorf("flow %s: causes %+v; want %s first, down, with its record", e.ID, e.Causes, failedTunnel)
		}
	}
	if named != flows {
		t.Errorf("%d of %d flows re-sent with their cause", named, flows)
	}
	// Nothing named outside: the POPs and regions stay calm.
	for id, ns := range g.nodes {
		if (ns.n.Kind == KindPOP || ns.n.Kind == KindRegion) && ns.n.Causes != nil {
			t.Errorf("%s names causes %v", id, ns.n.Causes)
		}
	}
}

// TestCrossSiteFlowNamesTunnelBetweenSites: a flow from destroyer (nyc) to a workload of
// aegis (nuremberg) joins the two clusters' workloads, whether destroyer's relay reports it
// (the client's view) or aegis's alone (the server's). With nyc's tunnels to london and
// then to nuremberg down, its errors are put first on the tunnel between nyc and
// nuremberg, though the london one went down before (on time alone, or on its id, it
// would come first).
func TestCrossSiteFlowNamesTunnelBetweenSites(t *testing.T) {
	now := time.Now()
	client := &pipeline.FlowEdge{M: pipeline.Meta{Time: now, Site: "nyc", Cluster: "destroyer"}, Interval: time.Second,
		SourceNamespace: "bookinfo", SourceWorkload: "reviews", DestNamespace: "bookinfo", DestWorkload: "ratings", DestCluster: "aegis",
		Protocol: "TCP", Port: 9080, Flows: 10, Requests: 10}
	server := *client
	server.M.Site, server.M.Cluster, server.SourceCluster, server.DestCluster = "nuremberg", "aegis", "destroyer", ""
	for _, cross := range []*pipeline.FlowEdge{client, &server} {
		t.Run(cross.M.Cluster, func(t *testing.T) {
			g := testGraph(append(calmLab(t, now), cross))
			id := "flow:" + workloadID("destroyer", "bookinfo", "reviews") + "->" + workloadID("aegis", "bookinfo", "ratings") + ":TCP/9080"
			es := g.edges[id]
			if es == nil {
				t.Fatalf("no edge %s", id)
			}
			if src := g.nodes[es.e.Source].n; src.Cluster != "destroyer" || src.Site != "nyc" || src.Parent != clusterID("destroyer") {
				t.Errorf("source %+v; want a workload of destroyer at nyc", src)
			}
			if dst := g.nodes[es.e.Target].n; dst.Cluster != "aegis" || dst.Site != "nuremberg" || dst.Parent != clusterID("aegis") {
				t.Errorf("destination %+v; want a workload of aegis at nuremberg", dst)
			}
			if es.e.Status != pipeline.StatusOK || es.e.Causes != nil {
				t.Errorf("calm cross-site flow: %s, causes %v", es.e.Status, es.e.Causes)
			}
			down := func(peer, peerSite string) *pipeline.TunnelStat {
				return &pipeline.TunnelStat{M: pipeline.Meta{Time: time.Now(), Site: "nyc", Cluster: "destroyer", Node: "nyc-1"}, Interface: "wg0",
					PeerNode: peer, PeerSite: peerSite, Status: pipeline.StatusDown}
			}
			g.Consume([]pipeline.Record{down("lon-1", "london")})
			g.flush()
			erring := *cross
			erring.M.Time, erring.Errors = time.Now(), 5
			g.Consume([]pipeline.Record{down("nue-gpu-1", "nuremberg"), &erring})
			g.flush()
			const between, london = "tunnel:node:nue-gpu-1|node:nyc-1", "tunnel:node:lon-1|node:nyc-1"
			if cs := es.e.Causes; es.e.Status != pipeline.StatusDegraded || len(cs) < 2 || cs[0].ID != between || cs[1].ID != london || cs[0].Since < cs[1].Since {
				t.Errorf("erring cross-site flow: %s, causes %+v; want %s first, then %s", es.e.Status, cs, between, london)
			}
		})
	}
}

// TestMeshCallDrawnOnce: the client's relay's and the server's relay's views of one call
// across the mesh, in either order, are one edge with the client's view (its errors, its
// rate), no client drawn in the server's cluster; the server's view counts again only
// once the client's is stale_after older than it.
func TestMeshCallDrawnOnce(t *testing.T) {
	now := time.Now()
	client := &pipeline.FlowEdge{M: pipeline.Meta{Time: now, Site: "nyc", Cluster: "destroyer"}, Interval: time.Second,
		SourceNamespace: "bookinfo", SourceWorkload: "reviews", DestNamespace: "bookinfo", DestWorkload: "ratings", DestCluster: "aegis",
		Protocol: "TCP", Port: 9080, Flows: 10, Requests: 10, Errors: 5}
	server := *client
	server.M.Site, server.M.Cluster, server.SourceCluster, server.DestCluster = "nuremberg", "aegis", "destroyer", ""
	server.Requests, server.Flows, server.Errors = 4, 4, 0
	id := "flow:" + workloadID("destroyer", "bookinfo", "reviews") + "->" + workloadID("aegis", "bookinfo", "ratings") + ":TCP/9080"
	check := func(g *graph, what, observed string, rps float64) {
		t.Helper()
		flows := 0
		for _, es := range g.edges {
			if es.e.Kind == KindFlow {
				flows++
			}
		}
		es := g.edges[id]
		if flows != 1 || es == nil || es.e.Attrs["observed_in"] != observed || es.e.Metrics["requests_per_s"] != rps {
			t.Errorf("%s: %d flow edges, %s: %+v; want one, observed in %s, %v requests/s", what, flows, id, es, observed, rps)
		}
		if _, ok := g.nodes[workloadID("aegis", "bookinfo", "reviews")]; ok {
			t.Errorf("%s: the client drawn in the server's cluster", what)
		}
	}
	check(testGraph([]pipeline.Record{client, &server}), "client's view, then server's", "destroyer", 10)
	check(testGraph([]pipeline.Record{&server, client}), "server's view, then client's", "destroyer", 10)
	check(testGraph([]pipeline.Record{&server}), "server's view alone", "aegis", 4)
	later := server
	later.M.Time = now.Add(testConfig().StaleAfter)
	check(testGraph([]pipeline.Record{client, &later}), "server's view, stale_after after the client's", "aegis", 4)
}

func TestSlowOSDNamesItsClustersWorkloads(t *testing.T) {
	now := time.Now()
	recs := append(calmLab(t, now), erroring(t, now)...)
	// A workload in Nuremberg (aegis) errs too: the New York OSD is not beneath it.
	recs = append(recs, &pipeline.FlowEdge{M: pipeline.Meta{Time: now, Site: "nuremberg", Cluster: "aegis"}, Interval: time.Second,
		SourceNamespace: "ml", SourceWorkload: "trainer", DestNamespace: "ml", DestWorkload: "feature-store", Protocol: "TCP", Port: 80,
		Flows: 10, Requests: 10, Errors: 5})
	recs = append(recs, &pipeline.OSDStat{M: pipeline.Meta{Time: now, Site: "nyc", Cluster: "vault", Node: "nyc-vault-1"}, FSID: "f00d", OSD: 1,
		Host: "vault-a", Up: true, In: true, CommitLatencyMs: 42, ApplyLatencyMs: 40})
	g := testGraph(recs)
	workloads := 0
	for id, ns := range g.nodes {
		if ns.n.Kind != KindWorkload || !bad(ns.n.Status) {
			continue
		}
		switch ns.n.Cluster {
		case "destroyer":
			workloads++
			if len(ns.n.Causes) == 0 || ns.n.Causes[0].ID != "osd:f00d.1" || !strings.Contains(ns.n.Causes[0].Evidence, "commit 42 ms") {
				t.Errorf("%s (destroyer, nyc): causes %+v; want osd:f00d.1 first with its latency", id, ns.n.Causes)
			}
		case "aegis":
			if ns.n.Causes != nil {
				t.Errorf("%s (aegis, nuremberg): causes %+v; want none (the slow OSD serves nyc)", id, ns.n.Causes)
			}
		}
	}
	if workloads < 3 {
		t.Errorf("%d degraded destroyer workloads, want the bookinfo callees", workloads)
	}
}

func TestPOPAndRegionCauses(t *testing.T) {
	now := time.Now()
	recs := calmLab(t, now)
	recs = append(recs,
		&pipeline.Probe{M: pipeline.Meta{Time: now, Site: "nyc"}, Vantage: "nyc-prober", Method: "tcp", POP: "lon", Service: "api.example.net.", Error: "connection refused"},
		&pipeline.Probe{M: pipeline.Meta{Time: now, Site: "nuremberg"}, Vantage: "nuremberg-prober", Method: "tcp", POP: "lon", Service: "api.example.net.", Error: "connection refused"},
		&pipeline.TunnelStat{M: pipeline.Meta{Time: now, Site: "london", Cluster: "edge-lon", Node: "lon-1"}, Interface: "wg0", PeerNode: "par-1", PeerSite: "paris", Status: pipeline.StatusDown},
		&pipeline.SteeringDecision{M: pipeline.Meta{Time: now}, Service: "api.example.net.", ClientRegion: "eu-west", POP: "lon", OldWeight: 1, NewWeight: 0, Cause: "health", Reason: "lon probes failing"},
	)
	g := testGraph(recs)
	pop := g.nodes[popID("lon")].n
	ids := func(cs []Cause) string {
		var out []string
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return strings.Join(out, " ")
	}
	// Down first: the two failed probes (specific) and the front door's down tunnel, then
	// the front door itself (degraded).
	if got := ids(pop.Causes); !strings.Contains(got, "probe:nyc-prober->lon/tcp") || !strings.Contains(got, "probe:nuremberg-prober->lon/tcp") ||
		!strings.Contains(got, "tunnel:node:lon-1|node:par-1") || !strings.HasSuffix(got, "node:lon-1") {
		t.Errorf("pop lon causes: %s", got)
	}
	region := g.nodes[regionID("eu-west")].n
	if len(region.Causes) != 1 || region.Causes[0].ID != "steer:eu-west->lon/api.example.net." || !strings.Contains(region.Causes[0].Evidence, "lon probes failing") {
		t.Errorf("region eu-west causes: %+v; want the drain of lon", region.Causes)
	}
	if g.nodes[popID("par")].n.Causes != nil {
		t.Errorf("pop par is healthy but names %v", g.nodes[popID("par")].n.Causes)
	}
}

// TestAlertCause: the cause an alert notification carries (Map.Cause) for the labels of
// each SLO's and built-in rule's alerts: none in the calm lab; a POP's failed probe, a
// workload's slow OSD, a region's drained arrow, the tunnel between the alert's sites
// and a Ceph cluster's slowest OSD (or the one the alert names) once they fail.
func TestAlertCause(t *testing.T) {
	now := time.Now()
	newMap := func(recs []pipeline.Record) *Map {
		m, err := New(testConfig(), Deps{Inventory: labInventory(), Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		m.Consume(recs)
		m.tick()
		return m
	}
	popAlert := map[string]string{"alertname": "MeridianPOPAvailability", "pop": "lon", "site": "london", "service": "api.example.net."}
	svcAlert := map[string]string{"alertname": "MeridianServiceAvailability", "cluster": "destroyer", "namespace": "bookinfo", "service": "reviews-v2"}
	regionAlert := map[string]string{"alertname": "MeridianRegret", "client_region": "eu-west"}
	tunnelAlert := map[string]string{"alertname": "MeridianTunnelAvailability", "site": "paris", "peer_site": "london"}
	cephAlert := map[string]string{"alertname": "MeridianCephWriteLatency", "site": "nyc", "cluster": "vault"}
	flapAlert := map[string]string{"alertname": "MeridianCephOSDFlapping", "cluster": "vault", "fsid": "f00d", "osd": "1", "host": "vault-a"}
	calm := newMap(calmLab(t, now))
	for _, l := range []map[string]string{popAlert, svcAlert, regionAlert, tunnelAlert, cephAlert} {
		if c := calm.Cause(l); c != "" {
			t.Errorf("calm lab: cause for %v = %q, want none", l, c)
		}
	}
	recs := append(calmLab(t, now), erroring(t, now)...)
	recs = append(recs,
		&pipeline.OSDStat{M: pipeline.Meta{Time: now, Site: "nyc", Cluster: "vault", Node: "nyc-vault-1"}, FSID: "f00d", OSD: 1, Host: "vault-a", Up: true, In: true, CommitLatencyMs: 42},
		&pipeline.OSDStat{M: pipeline.Meta{Time: now, Site: "nyc", Cluster: "vault", Node: "nyc-vault-1"}, FSID: "f00d", OSD: 2, Host: "vault-a", Up: true, In: true, CommitLatencyMs: 90},
		&pipeline.Probe{M: pipeline.Meta{Time: now, Site: "nyc"}, Vantage: "nyc-prober", Method: "tcp", POP: "lon", Service: "api.example.net.", Error: "connection refused"},
		&pipeline.TunnelStat{M: pipeline.Meta{Time: now, Site: "london", Cluster: "edge-lon", Node: "lon-1"}, Interface: "wg0", PeerNode: "par-1", PeerSite: "paris", Status: pipeline.StatusDown},
		&pipeline.SteeringDecision{M: pipeline.Meta{Time: now}, Service: "api.example.net.", ClientRegion: "eu-west", POP: "lon", OldWeight: 1, NewWeight: 0, Cause: "health", Reason: "lon probes failing"},
	)
	m := newMap(recs)
	for l, want := range map[*map[string]string]string{
		&popAlert:    "probe:nyc-prober->lon/tcp (down since ",
		&svcAlert:    "osd:f00d.2 (degraded since ", // the slower of the two
		&regionAlert: "steer:eu-west->lon/api.example.net. (down since ",
		&tunnelAlert: "tunnel:node:lon-1|node:par-1 (down since ",
		&cephAlert:   "osd:f00d.2 (degraded since ", // the slower of the two
		&flapAlert:   "osd:f00d.1 (degraded since ", // the one the alert names
	} {
		if c := m.Cause(*l); !strings.HasPrefix(c, want) || !strings.Contains(c, "): ") {
			t.Errorf("cause for %v = %q, want %q… with its evidence", *l, c, want)
		}
	}
}
