package topomap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

// failedTunnel is the tunnel the scripted past breaks, and erringFlow the flow in nyc
// whose requests fail from then on.
const (
	failedTunnel = "tunnel:node:lon-1|node:nyc-1"
	erringFlow   = "flow:workload:destroyer/bookinfo/productpage-v1->workload:destroyer/bookinfo/reviews-v2:TCP/9080"
	// meshFlow is a call from destroyer (nyc) to aegis (nuremberg), seen by both relays.
	meshFlow = "flow:workload:destroyer/bookinfo/details-v1->workload:aegis/bookinfo/ratings-v1:TCP/9080"
)

// scriptedPast is the lab reporting every 30 s from now-12m to now-2m; the tunnel
// lon-1|nyc-1 is down from fail (now-7m) on, a fifth of the requests of a flow in nyc fail
// from then on, and steering drains lon for eu-west a minute later. Across the mesh,
// destroyer's details calls aegis's ratings: destroyer's relay reports it (a third of the
// requests failing from fail on) until fail+90s, then falls silent; aegis's relay reports
// the same call all along (fewer requests, none failing). It returns the records and
// fail.
func scriptedPast(now time.Time) ([]pipeline.Record, time.Time) {
	start, end := now.Add(-12*time.Minute).Truncate(time.Second), now.Add(-2*time.Minute)
	fail := start.Add(5 * time.Minute)
	var out []pipeline.Record
	for t := start; !t.After(end); t = t.Add(30 * time.Second) {
		flow := &pipeline.FlowEdge{M: pipeline.Meta{Time: t, Collector: "test", Site: "nyc", Cluster: "destroyer", Node: "nyc-1"}, Interval: 30 * time.Second,
			SourceNamespace: "bookinfo", SourceWorkload: "productpage-v1", DestNamespace: "bookinfo", DestWorkload: "reviews-v2",
			Protocol: "TCP", Port: 9080, Flows: 300, Requests: 300, LatencyP50: 4 * time.Millisecond, LatencyP90: 9 * time.Millisecond, LatencyP99: 20 * time.Millisecond}
		if !t.Before(fail) {
			flow.Errors = 60
		}
		out = append(out, flow)
		egress := &pipeline.FlowEdge{M: pipeline.Meta{Time: t, Collector: "test", Site: "nyc", Cluster: "destroyer", Node: "nyc-1"}, Interval: 30 * time.Second,
			SourceNamespace: "bookinfo", SourceWorkload: "details-v1", DestNamespace: "bookinfo", DestWorkload: "ratings-v1", DestCluster: "aegis",
			Protocol: "TCP", Port: 9080, Flows: 90, Requests: 90}
		if !t.Before(fail) {
			egress.Errors = 30
		}
		if t.Before(fail.Add(2 * time.Minute)) {
			out = append(out, egress)
		}
		out = append(out, &pipeline.FlowEdge{M: pipeline.Meta{Time: t, Collector: "test", Site: "nuremberg", Cluster: "aegis", Node: "nue-gpu-1"}, Interval: 30 * time.Second,
			SourceNamespace: "bookinfo", SourceWorkload: "details-v1", SourceCluster: "destroyer", DestNamespace: "bookinfo", DestWorkload: "ratings-v1",
			Protocol: "TCP", Port: 9080, Flows: 60, Requests: 60})
		for _, r := range labRecords(t) {
			switch r := r.(type) {
			case *pipeline.SteeringDecision:
				if !t.Equal(start) {
					continue // decisions come on change only
				}
			case *pipeline.TunnelStat:
				if r.M.Node == "nyc-1" && r.PeerNode == "lon-1" && !t.Before(fail) {
					r.Status, r.RxRate, r.TxRate = pipeline.StatusDown, 0, 0
					out = append(out, &pipeline.TunnelStat{M: pipeline.Meta{Time: t, Collector: "test", Site: "london", Cluster: "edge-lon", Node: "lon-1"},
						Interface: "wg0", PeerNode: "nyc-1", PeerSite: "nyc", Status: pipeline.StatusDown, Endpoint: "127.0.0.1:51820"})
				}
			}
			out = append(out, r)
		}
	}
	out = append(out, &pipeline.SteeringDecision{M: pipeline.Meta{Time: fail.Add(time.Minute), Collector: "test"}, Service: "api.example.net.",
		ClientRegion: "eu-west", POP: "lon", OldWeight: 0.6, NewWeight: 0, Cause: "health", Reason: "lon unreachable from nyc"})
	return out, fail
}

// storeRecords inserts recs into st, one block per kind, as the pipeline would.
func storeRecords(t testing.TB, st *storage.Store, recs []pipeline.Record) {
	t.Helper()
	byKind := map[pipeline.Kind][]pipeline.Record{}
	for _, r := range recs {
		byKind[r.Kind()] = append(byKind[r.Kind()], r)
	}
	enc := storage.NewEncoder()
	for k, rs := range byKind {
		native, err := enc.Encode(k, rs)
		if err != nil {
			t.Fatal(err)
		}
		tok := fmt.Sprintf("%s-%d-%d", k, len(rs), time.Now().UnixNano())
		if err := st.Insert(context.Background(), pipeline.Block{Kind: k, Rows: len(rs), Token: tok, Native: native}); err != nil {
			t.Fatalf("insert %s: %v", k, err)
		}
	}
}

// historyMap is a lab map over a store holding the scripted past.
func historyMap(t *testing.T) (*Map, *httptest.Server, time.Time, []pipeline.Record) {
	t.Helper()
	st := storagetest.New(t)
	recs, fail := scriptedPast(time.Now())
	storeRecords(t, st, recs)
	m, srv := startMap(t, fastConfig(), labInventory(), nil)
	m.UseHistory(st)
	return m, srv, fail, recs
}

func TestRebuildPast(t *testing.T) {
	m, _, fail, recs := historyMap(t)
	ctx := context.Background()

	before, err := m.rebuildAt(ctx, fail.Add(-15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	after, err := m.rebuildAt(ctx, fail.Add(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	edge := func(p *pastGraph, id string) *Edge {
		_, edges := p.elements(nil)
		for _, e := range edges {
			if e.ID == id {
				return e
			}
		}
		t.Fatalf("%s missing at %s", id, p.at)
		return nil
	}
	if e := edge(before, failedTunnel); e.Status != pipeline.StatusOK {
		t.Errorf("before the failure %s is %s, want ok", failedTunnel, e.Status)
	}
	if e := edge(after, failedTunnel); e.Status != pipeline.StatusDown {
		t.Errorf("after the failure %s is %s, want down", failedTunnel, e.Status)
	}
	steer := "steer:eu-west->lon/api.example.net."
	if e := edge(before, steer); e.Metrics["weight"] != 0.6 || e.Status != pipeline.StatusDegraded {
		t.Errorf("before the drain %s = %v %s, want weight 0.6, degraded (decided 5 minutes earlier, still held)", steer, e.Metrics, e.Status)
	}
	if e := edge(after, steer); e.Metrics["weight"] != 0 || e.Status != pipeline.StatusDown || e.Attrs["cause"] != "health" {
		t.Errorf("after the drain %s = %v %v %s, want weight 0 (health), down", steer, e.Metrics, e.Attrs, e.Status)
	}

	// The rebuilt state is what the live map showed at that instant: a graph fed every
	// record up to it, in order, on a clock at each record's time, then aged.
	for _, at := range []time.Time{fail.Add(-15 * time.Second), fail.Add(90 * time.Second), fail.Add(7 * time.Minute)} {
		past, err := m.rebuildAt(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		live := liveAt(m, recs, at)
		compareGraphs(t, at, live, past)
		checkMeshFlow(t, past, at.After(fail.Add(5*time.Minute)), at.After(fail))
	}

	// Before any record, the inventory alone: nothing observed, no edge.
	empty, err := m.rebuildAt(ctx, fail.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	nodes, edges := empty.elements(nil)
	if len(edges) != 0 {
		t.Errorf("an hour before the records: %d edges, want none", len(edges))
	}
	for _, n := range nodes {
		if n.Status != pipeline.StatusUnknown {
			t.Errorf("an hour before the records: %s is %s, want unknown", n.ID, n.Status)
		}
	}
}

// checkMeshFlow: the call across the mesh is one edge, from destroyer's details (at nyc)
// to aegis's ratings (at nuremberg), with no client drawn inside aegis; it shows the
// client's relay's view (destroyer's, erring after fail) while that one reports, then the
// server's (aegis's, 2 requests/s, none failing) once the client's has been silent for
// stale_after.
func checkMeshFlow(t *testing.T, p *pastGraph, serverView, erring bool) {
	t.Helper()
	nodes, edges := p.elements(nil)
	var mesh []*Edge
	for _, e := range edges {
		if e.Kind == KindFlow && strings.Contains(e.ID, "details-v1") {
			mesh = append(mesh, e)
		}
	}
	for _, n := range nodes {
		if n.ID == workloadID("aegis", "bookinfo", "details-v1") || n.ID == workloadID("destroyer", "bookinfo", "ratings-v1") {
			t.Errorf("at %s: %s drawn", p.at.Format(time.TimeOnly), n.ID)
		}
	}
	want, status, rate := "destroyer", pipeline.StatusOK, 3.0
	if serverView {
		want, rate = "aegis", 2
	} else if erring {
		status = pipeline.StatusDegraded
	}
	if len(mesh) != 1 || mesh[0].ID != meshFlow || mesh[0].Attrs["observed_in"] != want || mesh[0].Status != status || mesh[0].Metrics["requests_per_s"] != rate {
		for _, e := range mesh {
			t.Logf("%s %s %v %v", e.ID, e.Status, e.Attrs, e.Metrics)
		}
		t.Errorf("at %s: %d edges of the mesh call; want one %s, observed in %s, %s, %v requests/s", p.at.Format(time.TimeOnly), len(mesh), meshFlow, want, status, rate)
	}
}

// liveAt is the live graph as it stood at at: every record up to at consumed on a clock
// at its time, aged at at.
func liveAt(m *Map, recs []pipeline.Record, at time.Time) *graph {
	var clock time.Time
	g := newGraph(m.graph.inv, m.graph.rules, func() time.Time { return clock })
	for _, r := range recs {
		if r.Meta().Time.After(at) {
			continue
		}
		clock = r.Meta().Time
		g.Consume([]pipeline.Record{r})
		g.age()
	}
	clock = at
	g.age()
	g.flush()
	return g
}

// compareGraphs checks that every element has the same status, metrics and attributes in
// both. Steering edges and client regions are left out: the live map keeps them fresh
// by polling steering (absent here), the past by holding the last decision.
func compareGraphs(t *testing.T, at time.Time, live *graph, past *pastGraph) {
	t.Helper()
	nodes, edges := past.elements(nil)
	seen := map[string]bool{}
	for _, n := range nodes {
		seen[n.ID] = true
		if n.Kind == KindRegion {
			continue
		}
		ln, ok := live.nodes[n.ID]
		switch {
		case !ok:
			t.Errorf("at %s: %s rebuilt but not in the live graph", at.Format(time.TimeOnly), n.ID)
		case ln.n.Status != n.Status || !maps.Equal(ln.n.Metrics, n.Metrics):
			t.Errorf("at %s: %s live %s %v, rebuilt %s %v", at.Format(time.TimeOnly), n.ID, ln.n.Status, ln.n.Metrics, n.Status, n.Metrics)
		}
	}
	for _, e := range edges {
		seen[e.ID] = true
		if e.Kind == KindSteer {
			continue
		}
		le, ok := live.edges[e.ID]
		switch {
		case !ok:
			t.Errorf("at %s: %s rebuilt but not in the live graph", at.Format(time.TimeOnly), e.ID)
		case le.e.Status != e.Status || !maps.Equal(le.e.Metrics, e.Metrics) || !maps.Equal(le.e.Attrs, e.Attrs):
			t.Errorf("at %s: %s live %s %v %v, rebuilt %s %v %v", at.Format(time.TimeOnly), e.ID, le.e.Status, le.e.Metrics, le.e.Attrs, e.Status, e.Metrics, e.Attrs)
		}
	}
	for id, le := range live.edges {
		if !seen[id] && le.e.Kind != KindSteer {
			t.Errorf("at %s: %s in the live graph, not rebuilt", at.Format(time.TimeOnly), id)
		}
	}
}

// TestBulkRebuildEqualsIncremental: a past state built in bulk (no change tracked, every
// status computed once) equals the one the incremental graph reaches from the same stored
// records and alerts, every field of every element: over the scripted past, plus a mesh
// whose two ends report at different times (one of them long stale, some down, one peer
// known only by its key, one node outside the inventory), a firing alert, and the erring
// flow's pair again across to aegis (nuremberg): one more edge, read back beside it, which
// aegis's relay also reports (the server's view, not drawn over the client's); and the
// scripted call across the mesh (checkMeshFlow).
func TestBulkRebuildEqualsIncremental(t *testing.T) {
	m, _, fail, _ := historyMap(t)
	st := m.history.(*storage.Store)
	// nyc-vault-1 has no tunnel in the lab: its tunnels have one report per end; the lab's
	// have two (the lab's and the mesh's, named differently); rogue-1 is outside the
	// inventory.
	nodes := []string{"nyc-vault-1", "lon-1", "nyc-1", "par-1", "tyo-1", "rogue-1"}
	var recs []pipeline.Record
	for i, a := range nodes {
		for j, b := range nodes[i+1:] {
			for k, ago := range []time.Duration{10 * time.Minute, 3 * time.Minute, 40 * time.Second} {
				status := pipeline.StatusOK
				if (i+j+k)%4 == 0 {
					status = pipeline.StatusDown
				}
				when := fail.Add(2*time.Minute - ago)
				r := tunnel(a, "", b, "", status)
				r.M.Time, r.LastHandshake, r.RxRate, r.Endpoint = when, when.Add(-5*time.Second), float64(100*(i+j+k)), fmt.Sprintf("10.0.%d.%d:51820", i, j)
				recs = append(recs, r)
				if (i+j)%3 != 0 || k == 0 { // the other end only reported long ago
					back := tunnel(b, "", a, "", pipeline.StatusOK)
					// Before, with, or after the first end's report.
					back.M.Time, back.TxRate = when.Add(time.Duration(j-1)*time.Second), float64(50*k)
					back.LastHandshake, back.Endpoint = back.M.Time.Add(-7*time.Second), fmt.Sprintf("10.1.%d.%d:51820", i, j)
					recs = append(recs, back)
				}
			}
		}
	}
	keyed := tunnel("lon-1", "london", "", "", pipeline.StatusDegraded)
	keyed.M.Time, keyed.PublicKey = fail.Add(time.Minute), "mKHe2y3tF0aZ9Xq+key="
	// The keyed peer's own report (its node name unknown to it: the collector names it),
	// and a second interface of lon-1 to par-1, down, reported by both ends at once.
	keyedBack := tunnel("", "", "lon-1", "london", pipeline.StatusOK)
	keyedBack.M.Time, keyedBack.M.Collector, keyedBack.Endpoint = fail.Add(30*time.Second), "?mKHe2y3t", "10.9.9.9:51820"
	wg1 := tunnel("lon-1", "london", "par-1", "paris", pipeline.StatusDown)
	wg1.M.Time, wg1.Interface, wg1.TxRate = fail.Add(100*time.Second), "wg1", 7
	wg1Back := tunnel("par-1", "paris", "lon-1", "london", pipeline.StatusOK)
	wg1Back.M.Time, wg1Back.Interface, wg1Back.Endpoint = fail.Add(100*time.Second), "wg1", "10.1.1.1:51821"
	recs = append(recs, keyed, keyedBack, wg1, wg1Back)
	for i, ago := range []time.Duration{4 * time.Minute, time.Minute} {
		recs = append(recs, &pipeline.FlowEdge{M: pipeline.Meta{Time: fail.Add(2*time.Minute - ago), Collector: "test", Site: "nyc", Cluster: "destroyer", Node: "nyc-1"},
			Interval: 30 * time.Second, SourceNamespace: "bookinfo", SourceWorkload: "productpage-v1", DestNamespace: "bookinfo", DestWorkload: "reviews-v2",
			DestCluster: "aegis", Protocol: "TCP", Port: 9080, Flows: 30, Requests: 30, Errors: uint64(20 * i)},
			// aegis's relay's view of the same call, at the same times: not drawn.
			&pipeline.FlowEdge{M: pipeline.Meta{Time: fail.Add(2*time.Minute - ago), Collector: "test", Site: "nuremberg", Cluster: "aegis", Node: "nue-gpu-1"},
				Interval: 30 * time.Second, SourceNamespace: "bookinfo", SourceWorkload: "productpage-v1", SourceCluster: "destroyer", DestNamespace: "bookinfo",
				DestWorkload: "reviews-v2", Protocol: "TCP", Port: 9080, Flows: 10, Requests: 10})
	}
	const crossFlow = "flow:workload:destroyer/bookinfo/productpage-v1->workload:aegis/bookinfo/reviews-v2:TCP/9080"
	storeRecords(t, st, recs)
	var rows []pipeline.Record
	rec := alerts.NewRecorder(pipeline.AppenderFunc(func(_ context.Context, rs ...pipeline.Record) error {
		rows = append(rows, rs...)
		return nil
	}), "ruler")
	page := alerts.Alert{Name: "MeridianPOPAvailability", Severity: alerts.SeverityPage, Labels: map[string]string{"pop": "lon", "slo": "availability"}, ActiveAt: fail}
	if err := rec.Observe(context.Background(), fail.Add(time.Minute), []alerts.Alert{page}); err != nil {
		t.Fatal(err)
	}
	storeRecords(t, st, rows)

	ctx := context.Background()
	for _, at := range []time.Time{fail.Add(-15 * time.Second), fail.Add(90 * time.Second), fail.Add(2 * time.Minute), fail.Add(7 * time.Minute)} {
		bulk, err := m.rebuildAt(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		// The incremental reference: the same records and alerts through the graph's
		// change tracking, as rebuild did before the bulk build.
		past, err := m.pastRecords(ctx, at.Add(-m.cfg.ExpireAfter), at, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		firing, err := m.pastAlerts(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		inc := &pastGraph{at: at}
		inc.g = newGraph(m.graph.inventory(), m.graph.rules, func() time.Time { return at })
		inc.g.replay(past, at)
		inc.g.applyAlerts(firing)

		bn, be := bulk.elements(nil)
		in, ie := inc.elements(nil)
		byID := func(ns []*Node, es []*Edge) map[string]any {
			out := map[string]any{}
			for _, n := range ns {
				out[n.ID] = *n
			}
			for _, e := range es {
				out[e.ID] = *e
			}
			return out
		}
		got, want := byID(bn, be), byID(in, ie)
		if len(got) != len(want) {
			t.Errorf("at %s: bulk has %d elements, incremental %d", at.Format(time.TimeOnly), len(got), len(want))
		}
		downTunnels := 0
		for id, w := range want {
			if !reflect.DeepEqual(got[id], w) {
				t.Errorf("at %s: %s\n bulk        %+v\n incremental %+v", at.Format(time.TimeOnly), id, got[id], w)
			}
			if e, ok := w.(Edge); ok && e.Kind == KindTunnel && e.Status == pipeline.StatusDown {
				downTunnels++
			}
		}
		if at.After(fail) && downTunnels == 0 {
			t.Errorf("at %s: no tunnel down: the mesh does not exercise the statuses", at.Format(time.TimeOnly))
		}
		checkMeshFlow(t, bulk, at.After(fail.Add(5*time.Minute)), at.After(fail))
		if at.Equal(fail.Add(2 * time.Minute)) {
			cross, ok := want[crossFlow].(Edge)
			if _, in := want[erringFlow]; !ok || !in || cross.Status != pipeline.StatusDegraded || cross.Target != workloadID("aegis", "bookinfo", "reviews-v2") ||
				cross.Attrs["observed_in"] != "destroyer" {
				t.Errorf("at %s: cross-cluster flow %+v (found %v), in-cluster one found %v; want both, the cross one degraded", at.Format(time.TimeOnly), cross, ok, in)
			}
		}
	}
}

func TestPastSnapshotEndpoint(t *testing.T) {
	m, srv, fail, _ := historyMap(t)
	get := func(q string) (int, serverMsg) {
		req, _ := http.NewRequest("GET", srv.URL+"/map/api/snapshot?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var msg serverMsg
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&msg); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, msg
	}
	span := func() map[string]any {
		req, _ := http.NewRequest("GET", srv.URL+"/map/api/history", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("/map/api/history: %d %v", resp.StatusCode, err)
		}
		return out
	}
	// The scripted past starts 5 minutes before the failure.
	if h := span(); h["available"] != true || int64(h["oldest"].(float64)) != fail.Add(-5*time.Minute).UnixMilli() {
		t.Errorf("/map/api/history = %v, want available from %d", h, fail.Add(-5*time.Minute).UnixMilli())
	}
	at := fail.Add(time.Minute)
	code, msg := get("layers=tunnel&at=" + url.QueryEscape(at.UTC().Format(time.RFC3339Nano)))
	if code != 200 || msg.At != at.UnixMilli() || len(msg.Nodes) != 0 || len(msg.Edges) != 10 {
		t.Fatalf("?at= (RFC 3339) = %d, at %d (want %d), %d nodes, %d edges (want the 10 tunnels alone)", code, msg.At, at.UnixMilli(), len(msg.Nodes), len(msg.Edges))
	}
	if e := hasEdge(msg, failedTunnel); e == nil || e.Status != pipeline.StatusDown {
		t.Errorf("%s at fail+1m: %+v, want down", failedTunnel, e)
	}
	if code, msg = get(fmt.Sprintf("at=%d", fail.Add(-time.Minute).UnixMilli())); code != 200 || hasEdge(msg, failedTunnel).Status != pipeline.StatusOK {
		t.Errorf("?at= (unix ms) before the failure: %d, %s", code, hasEdge(msg, failedTunnel).Status)
	}
	for q, want := range map[string]int{
		"at=yesterday": http.StatusBadRequest,
		fmt.Sprintf("at=%d", time.Now().Add(time.Hour).UnixMilli()): http.StatusBadRequest,
	} {
		if code, _ := get(q); code != want {
			t.Errorf("?%s = %d, want %d", q, code, want)
		}
	}
	m.UseHistory(nil)
	if code, _ := get(fmt.Sprintf("at=%d", fail.UnixMilli())); code != http.StatusNotImplemented {
		t.Errorf("without a history store ?at= = %d, want 501", code)
	}
	if h := span(); h["available"] != false || !strings.Contains(h["reason"].(string), "history store") {
		t.Errorf("/map/api/history without a store = %v", h)
	}
}

func TestPlaybackOverWebsocket(t *testing.T) {
	m, srv, fail, _ := historyMap(t)
	m.Consume(labRecords(time.Now())) // live: the tunnel is up
	c := dial(t, srv, nil)
	send(t, c, map[string]any{"type": "hello", "at": fail.Add(-20 * time.Second).UnixMilli()})
	snap := until(t, c, func(s serverMsg) bool { return s.Type == "snapshot" })
	if snap.At != fail.Add(-20*time.Second).UnixMilli() || snap.Epoch != "" {
		t.Fatalf("hello at: snapshot at %d epoch %q, want the instant and no epoch (nothing to resume)", snap.At, snap.Epoch)
	}
	if e := hasEdge(snap, failedTunnel); e == nil || e.Status != pipeline.StatusOK {
		t.Fatalf("%s 20 s before the failure: %+v, want ok", failedTunnel, e)
	}
	// Play at 60x: the deltas carry the failure as the past clock passes it.
	send(t, c, map[string]any{"type": "at", "at": fail.Add(-20 * time.Second).UnixMilli(), "speed": 60})
	var lastAt int64
	d := until(t, c, func(s serverMsg) bool {
		if s.Type == "delta" {
			if s.At <= lastAt || s.Speed != 60 {
				t.Errorf("playback delta at %d after %d, speed %v", s.At, lastAt, s.Speed)
			}
			lastAt = s.At
		}
		e := hasEdge(s, failedTunnel)
		return s.Type == "delta" && e != nil && e.Status == pipeline.StatusDown
	})
	if d.At < fail.UnixMilli() {
		t.Errorf("tunnel went down in the delta at %d, before the failure at %d", d.At, fail.UnixMilli())
	}
	// Back to live: a snapshot of the present, with the run's epoch, and live deltas.
	send(t, c, map[string]any{"type": "live"})
	live := until(t, c, func(s serverMsg) bool { return s.Type == "snapshot" })
	if live.At != 0 || live.Epoch == "" {
		t.Fatalf("live snapshot: at %d epoch %q", live.At, live.Epoch)
	}
	if e := hasEdge(live, failedTunnel); e == nil || e.Status != pipeline.StatusOK {
		t.Errorf("live %s: %+v, want ok", failedTunnel, e)
	}
	m.Consume([]pipeline.Record{tunnel("par-1", "paris", "tyo-1", "tokyo", pipeline.StatusDown)})
	until(t, c, func(s serverMsg) bool {
		e := hasEdge(s, "tunnel:node:par-1|node:tyo-1")
		return s.Type == "delta" && e != nil && e.Status == pipeline.StatusDown
	})
}

// BenchmarkTopomapPastRebuild rebuilds the 10,000-node, 50,000-tunnel map at a past
// instant from the embedded engine: each tunnel reported by both ends three times in the
// minute before it (300,000 rows), a tenth of them down in their latest report. It
// reports the server-side cost (queries, graph, JSON) against the live snapshot's (the
// same graph, built from the same records, encoded) and checks what it rebuilt.
func BenchmarkTopomapPastRebuild(b *testing.B) {
	s := newScale()
	st := storagetest.New(b)
	at := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	var latest []pipeline.Record
	for round, ago := range []time.Duration{50 * time.Second, 30 * time.Second, 10 * time.Second} {
		var recs []pipeline.Record
		for i := range s.tunnels {
			status := pipeline.StatusOK
			if round == 2 && i%10 == 0 {
				status = pipeline.StatusDown
			}
			r := s.record(i, status)
			r.M.Time, r.LastHandshake = at.Add(-ago), at.Add(-ago)
			peer := *r
			a, p := s.inv.Nodes[s.tunnels[i][0]], s.inv.Nodes[s.tunnels[i][1]]
			peer.M.Site, peer.M.Cluster, peer.M.Node, peer.PeerNode, peer.PeerSite = p.Site, p.Cluster, p.Name, a.Name, a.Site
			recs = append(recs, r, &peer)
		}
		for chunk := range slices.Chunk(recs, 50000) {
			storeRecords(b, st, chunk)
		}
		if round == 2 {
			latest = recs
		}
	}
	// Rows ten minutes old have long been merged: merging the fresh inserts now would be
	// counted in the process CPU measured below.
	if _, err := st.Query(context.Background(), "OPTIMIZE TABLE "+st.Table(pipeline.KindTunnelStat)+" FINAL", "TSV"); err != nil {
		b.Fatal(err)
	}
	cfg := testConfig()
	m, err := New(cfg, Deps{Inventory: s.inv, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	m.UseHistory(st)
	m.graph.now = func() time.Time { return at }
	m.Consume(latest)
	m.tick()
	liveStart, liveCPU0 := time.Now(), processCPU()
	if _, err := m.hub.snapshot(nil, nil); err != nil {
		b.Fatal(err)
	}
	live, liveCPU := time.Since(liveStart), processCPU()-liveCPU0

	var best, minCPU time.Duration
	for range 3 {
		start, cpu0 := time.Now(), processCPU()
		past, err := m.rebuildAt(context.Background(), at)
		if err != nil {
			b.Fatal(err)
		}
		nodes, edges := past.elements(nil)
		data, err := snapshotMsg{Type: "snapshot", At: at.UnixMilli(), Nodes: nodes, Edges: edges}.encode()
		if err != nil {
			b.Fatal(err)
		}
		took, cpu := time.Since(start), processCPU()-cpu0
		best, minCPU = minNonZero(best, took), minNonZero(minCPU, cpu)
		down := 0
		for _, e := range edges {
			if e.Status == pipeline.StatusDown {
				down++
			}
		}
		if len(nodes) < 10000 || len(edges) != len(s.tunnels) || down != len(s.tunnels)/10 {
			b.Fatalf("rebuilt %d nodes, %d edges (%d down); want 10,000+, %d, %d down", len(nodes), len(edges), down, len(s.tunnels), len(s.tunnels)/10)
		}
		b.ReportMetric(float64(len(data)), "bytes")
	}
	// CPU time (the engine's threads included, the least of the three rebuilds) is
	// reported too: on a shared machine the wall time mostly measures the other tenants.
	fmt.Printf("BENCH topomap_past_rebuild %d ms ratio=%.3f (vs live snapshot %d ms; target 1000 ms: %.3f; cpu %d ms vs %d ms, ratio %.3f)\n",
		best.Milliseconds(), float64(best)/float64(live), live.Milliseconds(), float64(best)/float64(time.Second),
		minCPU.Milliseconds(), liveCPU.Milliseconds(), float64(minCPU)/float64(liveCPU))
}

func minNonZero(a, b time.Duration) time.Duration {
	if a == 0 || b < a {
		return b
	}
	return a
}

// processCPU is the user+system CPU time of the whole process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestTimeTravelMessages: without a history store a past instant is answered with an
// error message and the session stays usable (back to live); bad instants and speeds
// close the connection with 1003 and a reason.
func TestTimeTravelMessages(t *testing.T) {
	m, srv := startMap(t, fastConfig(), labInventory(), nil)
	m.Consume(labRecords(time.Now()))
	c := dial(t, srv, nil)
	send(t, c, map[string]any{"type": "hello", "at": time.Now().Add(-time.Hour).UnixMilli()})
	if e := until(t, c, func(s serverMsg) bool { return s.Type == "error" }); !strings.Contains(e.Error, "history store") {
		t.Errorf("past without history: %q", e.Error)
	}
	send(t, c, map[string]any{"type": "live"})
	if s := until(t, c, func(s serverMsg) bool { return s.Type == "snapshot" }); s.At != 0 || s.Epoch == "" {
		t.Errorf("back to live after the error: snapshot at %d epoch %q", s.At, s.Epoch)
	}
	until(t, c, func(s serverMsg) bool { return hasEdge(s, failedTunnel) != nil }) // the live stream flows
	for _, msgs := range [][]map[string]any{
		{{"type": "hello", "at": time.Now().UnixMilli(), "speed": 99999}},
		{{"type": "hello"}, {"type": "at", "at": 0}},
		{{"type": "hello"}, {"type": "at", "at": time.Now().UnixMilli(), "speed": -1}},
	} {
		c := dial(t, srv, nil)
		for _, msg := range msgs {
			send(t, c, msg)
		}
		var ce *websocket.CloseError
		for {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := c.ReadMessage(); err != nil {
				if !errors.As(err, &ce) || ce.Code != websocket.CloseUnsupportedData {
					t.Errorf("%v: closed with %v, want 1003", msgs, err)
				}
				break
			}
		}
	}
}

// TestPastAlerts: the alerts a past state shows are those firing then, as the ruler
// recorded them (alerts.Recorder, every 30 s): the page on lon fires 4.5 minutes before
// the failure and resolves 6.5 minutes after it, so at fail+6m only the keyframe restating
// it is inside the window; a ticket on destroyer from a ruler that stopped a minute after
// it fired is no longer shown once its last row left the window. Playback carries the
// page's start in a delta.
func TestPastAlerts(t *testing.T) {
	m, _, fail, _ := historyMap(t)
	st := m.history.(*storage.Store)
	var rows []pipeline.Record
	app := pipeline.AppenderFunc(func(_ context.Context, recs ...pipeline.Record) error {
		rows = append(rows, recs...)
		return nil
	})
	page := alerts.Alert{Name: "MeridianPOPAvailability", Severity: alerts.SeverityPage, Labels: map[string]string{"pop": "lon", "slo": "availability"}, ActiveAt: fail.Add(-5 * time.Minute)}
	ticket := alerts.Alert{Name: "MeridianCephLatency", Severity: alerts.SeverityTicket, Labels: map[string]string{"cluster": "destroyer", "slo": "write-latency"}, ActiveAt: fail.Add(-6 * time.Minute)}
	ruler, stopped := alerts.NewRecorder(app, "ruler"), alerts.NewRecorder(app, "ruler-b")
	for at := fail.Add(-5 * time.Minute); !at.After(fail.Add(7 * time.Minute)); at = at.Add(30 * time.Second) {
		var firing []alerts.Alert
		if !at.Before(fail.Add(-270*time.Second)) && at.Before(fail.Add(390*time.Second)) {
			firing = append(firing, page)
		}
		if err := ruler.Observe(context.Background(), at, firing); err != nil {
			t.Fatal(err)
		}
		if !at.After(fail.Add(-4 * time.Minute)) {
			stopped.Observe(context.Background(), at, []alerts.Alert{ticket})
		}
	}
	storeRecords(t, st, rows)

	node := func(at time.Time, id string) *Node {
		t.Helper()
		p, err := m.rebuildAt(context.Background(), at)
		if err != nil {
			t.Fatal(err)
		}
		nodes, _ := p.elements(nil)
		for _, n := range nodes {
			if n.ID == id {
				return n
			}
		}
		t.Fatalf("%s missing at %s", id, at)
		return nil
	}
	pageText, ticketText := "MeridianPOPAvailability (availability) [page]", "MeridianCephLatency (write-latency) [ticket]"
	for _, c := range []struct {
		at          time.Duration
		id, alert   string // "": no alert
		worstStatus string
	}{
		{-5*time.Minute - 10*time.Second, "pop:lon", "", ""},
		{-4 * time.Minute, "pop:lon", pageText, pipeline.StatusDown},
		{-3 * time.Minute, "cluster:destroyer", ticketText, pipeline.StatusDegraded},
		{90 * time.Second, "pop:lon", pageText, pipeline.StatusDown},
		{90 * time.Second, "cluster:destroyer", ticketText, pipeline.StatusDegraded},
		{6 * time.Minute, "pop:lon", pageText, pipeline.StatusDown}, // the keyframe at fail+5m
		{6 * time.Minute, "cluster:destroyer", "", ""},              // its ruler's last row left the window
		{400 * time.Second, "pop:lon", "", ""},                      // resolved at fail+6m30s
	} {
		n := node(fail.Add(c.at), c.id)
		if got := strings.Join(n.Alerts, ","); got != c.alert {
			t.Errorf("fail%+v: %s alerts %q, want %q", c.at, c.id, got, c.alert)
		}
		if c.worstStatus != "" && severity[n.Status] < severity[c.worstStatus] {
			t.Errorf("fail%+v: %s is %s, want at least %s", c.at, c.id, n.Status, c.worstStatus)
		}
	}

	// Playback from before the page to after its start: the delta carries it.
	p, err := m.rebuildAt(context.Background(), fail.Add(-5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	p.elements(nil)
	nodes, _, _, _, err := m.step(context.Background(), p, fail.Add(-4*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(nodes, func(n *Node) bool { return n.ID == "pop:lon" })
	if i < 0 || !slices.Equal(nodes[i].Alerts, []string{pageText}) {
		t.Errorf("step over the page's start: pop:lon in the delta %v, want it with %q", i >= 0, pageText)
	}
}
