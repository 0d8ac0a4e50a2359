package topomap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// requireBrowser fails (does not skip) when the page, Node or Chromium is missing: `make
// test` installs all three (Debian packages chromium and nodejs, `make web`).
func requireBrowser(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatal("Chromium missing: install the Debian package chromium (make apt-test)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node missing: install the Debian package nodejs (make apt-test)")
	}
	for _, f := range []string{"web/dist/index.html", "web/node_modules/playwright-core/package.json"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s missing: run `make web` first", f)
		}
	}
}

// artifactsDir is where screenshots are kept: $MERIDIAN_ARTIFACTS or <repo>/artifacts/topomap.
func artifactsDir(t testing.TB) string {
	dir := os.Getenv("MERIDIAN_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "artifacts")
	}
	dir, _ = filepath.Abs(filepath.Join(dir, "topomap"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runNode runs an e2e script and returns its JSON lines keyed by "step".
func runNode(t testing.TB, timeout time.Duration, script string, args ...string) map[string]map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	steps := map[string]map[string]any{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			if s, ok := m["step"].(string); ok {
				steps[s] = m
			}
		}
	}
	if err != nil {
		t.Fatalf("node %s: %v\nstdout:\n%s\nstderr:\n%s", script, err, out, stderr.String())
	}
	return steps
}

func TestBrowserMap(t *testing.T) {
	requireBrowser(t)
	cfg := testConfig()
	m, srv := startMap(t, cfg, labInventory(), nil)
	now := time.Now()
	m.Consume(labRecords(now))
	recs := []pipeline.Record{}
	for _, e := range bookinfoFlowEdges(t, "destroyer", "nyc") {
		recs = append(recs, e)
	}
	m.Consume(recs)

	// The control endpoint lets the script decide when the tunnel goes down, so the
	// measured time covers record -> tick -> websocket -> redraw only.
	control := http.NewServeMux()
	control.HandleFunc("POST /tunnel-down", func(w http.ResponseWriter, r *http.Request) {
		m.Consume([]pipeline.Record{&pipeline.TunnelStat{
			M: pipeline.Meta{Time: time.Now(), Site: "london", Cluster: "edge-lon", Node: "lon-1"}, Interface: "wg0",
			PeerNode: "nyc-1", PeerSite: "nyc", Status: pipeline.StatusDown,
		}})
	})
	ctl := startHTTP(t, control)
	dir := artifactsDir(t)
	steps := runNode(t, 90*time.Second, "web/e2e/map.mjs", srv.URL+"/map/?token="+testToken, ctl, dir)

	loaded := steps["loaded"]
	if loaded == nil {
		t.Fatalf("page never loaded: %v", steps)
	}
	if got := strings.Join(toStrings(loaded["sites"]), ","); got != "london,nuremberg,nyc,paris,tokyo" {
		t.Errorf("sites shown = %s", got)
	}
	if n := len(toStrings(loaded["tunnels"])); n != 10 || loaded["tunnelsDrawn"].(float64) != 10 {
		t.Errorf("tunnels = %d, drawn %v; want the 10 of the mesh", n, loaded["tunnelsDrawn"])
	}
	if loaded["conn"] != "live" {
		t.Errorf("connection state shows %q, want live", loaded["conn"])
	}
	if tip, _ := steps["hover"]["tooltip"].(string); !strings.Contains(tip, "RTT") || !strings.Contains(tip, "Mbit/s") {
		t.Errorf("tunnel tooltip %q lacks RTT and throughput", tip)
	}
	// The steering arrow's tooltip shows the region's regret (the decision's, 12.5 ms).
	if st := steps["hover-steer"]; st == nil || st["drawn"] != true || !strings.Contains(st["tooltip"].(string), "regret 12.5 ms") {
		t.Errorf("steering arrow tooltip: %v, want it drawn and showing \"regret 12.5 ms\"", st)
	}
	down := steps["tunnel-down"]
	if down == nil || down["red"] != true {
		t.Fatalf("tunnel never drawn red: %v", down)
	}
	if ms := down["ms"].(float64); ms > 1000 {
		t.Errorf("tunnel turned red after %.0f ms, want within 1 s", ms)
	}
	if down["navigations"].(float64) != 1 {
		t.Errorf("page reloaded: %v navigations", down["navigations"])
	}
	svc := steps["services"]
	var pairs []string
	for _, f := range svc["flows"].([]any) {
		p := toStrings(f)
		pairs = append(pairs, p[0]+"->"+p[1])
	}
	for _, want := range []string{"bookinfo/productpage-v1->bookinfo/details-v1", "bookinfo/productpage-v1->bookinfo/reviews-v2",
		"bookinfo/productpage-v1->bookinfo/reviews-v3", "bookinfo/reviews-v2->bookinfo/ratings-v1"} {
		if !strings.Contains(strings.Join(pairs, " "), want) {
			t.Errorf("service view lacks %s; drew %v", want, pairs)
		}
	}
	if d, _ := steps["search"]["details"].(string); !strings.Contains(d, "par") {
		t.Errorf("search did not open details: %q", d)
	}
	if errs := steps["done"]["errors"]; len(errs.([]any)) > 0 {
		t.Errorf("page errors: %v", errs)
	}
	t.Logf("screenshots in %s; tunnel red after %.0f ms", dir, down["ms"])
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// TestBrowserTimeTravel opens the map at a past instant of a scripted failure (the
// tunnel lon-1|nyc-1 down, stored in the embedded engine) and checks the pixels: green
// 20 s before it, red after scrubbing the time bar past it, red again when playback at 60×
// passes through it, and green after one click back to live (where the tunnel is up). In
// the past, the erring flow's details name the tunnel as its cause.
func TestBrowserTimeTravel(t *testing.T) {
	requireBrowser(t)
	m, srv, fail, _ := historyMap(t)
	m.Consume(labRecords(time.Now()))
	dir := artifactsDir(t)
	steps := runNode(t, 120*time.Second, "web/e2e/timetravel.mjs", srv.URL+"/map/?token="+testToken, fmt.Sprint(fail.UnixMilli()), failedTunnel, erringFlow, dir)

	if b := steps["before"]; b == nil || b["green"] != true || !strings.Contains(b["url"].(string), "at=") {
		t.Errorf("20 s before the failure: %v, want the tunnel drawn green and ?at= in the address", b)
	}
	if s := steps["scrubbed"]; s == nil || s["red"] != true {
		t.Errorf("scrubbed past the failure: %v, want the tunnel drawn red", s)
	}
	c := steps["causes"]
	if c == nil || !strings.Contains(c["chain"].(string), "lon-1 ↔ nyc-1") || !strings.Contains(c["chain"].(string), "tunnel_stats") {
		t.Errorf("the erring flow's cause chain: %v; want the tunnel lon-1 ↔ nyc-1 with its record", c)
	} else if o := c["opened"].(map[string]any); o["selected"] != failedTunnel || o["view"] != true || !strings.Contains(c["effectOf"].(string), "Probable cause of") {
		t.Errorf("clicking the cause: %v; want the tunnel selected on the world map, naming what it causes", c)
	}
	p := steps["playback"]
	if p == nil || p["red"] != true {
		t.Fatalf("playback: %v, want the tunnel red once the clock passed the failure", p)
	}
	seen := p["seen"].([]any)
	first, last := seen[0].(map[string]any), seen[len(seen)-1].(map[string]any)
	if first["status"] != "ok" || last["status"] != "down" || last["at"].(float64) < float64(fail.UnixMilli()) || last["speed"].(float64) != 60 {
		t.Errorf("playback went %v .. %v; want ok, then down at or after %d, at 60×", first, last, fail.UnixMilli())
	}
	if l := steps["live"]; l == nil || l["green"] != true || l["conn"] != "live" || strings.Contains(l["url"].(string), "at=") {
		t.Errorf("back to live: %v", l)
	}
	if errs := steps["done"]["errors"]; len(errs.([]any)) > 0 {
		t.Errorf("page errors: %v", errs)
	}
	t.Logf("playback observed %d states; screenshots in %s", len(seen), dir)
}

// TestBrowserServiceLabels checks the service view's edge labels and namespace groups by
// their bounding boxes: in the bookinfo view and in a cluster of 300 workloads (30
// namespaces) with 360 flows, fitted and zoomed to 1:1, no label drawn covers a workload box,
// a namespace title or another label, the labels left out (shown on hover) are the
// minority in bookinfo, zoomed in the labels in view are at least 9 px high, and fitted
// every namespace has its group and its title, in view and clear of the legend, at least
// 9 px high, clear of the other titles, groups and boxes; a namespace of 60 services
// called only from another namespace is drawn as a block, not one tall column.
func TestBrowserServiceLabels(t *testing.T) {
	requireBrowser(t)
	m, srv := startMap(t, testConfig(), labInventory(), nil)
	now := time.Now()
	var recs []pipeline.Record
	for _, e := range bookinfoFlowEdges(t, "destroyer", "nyc") {
		recs = append(recs, e)
	}
	// 30 namespaces of 10 workloads, each a small shop (gateway, API, its backends), whose
	// APIs also call the next namespace's auth: 360 flows.
	const workloads = 300
	calls := [][2]string{{"gateway", "api"}, {"api", "auth"}, {"api", "cart"}, {"cart", "db"}, {"cart", "cache"}, {"api", "search"},
		{"search", "cache"}, {"api", "queue"}, {"queue", "worker"}, {"worker", "mail"}, {"worker", "db"}}
	flow := func(sns, src, dns, dst string, i int) *pipeline.FlowEdge {
		return &pipeline.FlowEdge{M: pipeline.Meta{Time: now, Site: "nuremberg", Cluster: "aegis"}, Interval: time.Second,
			SourceNamespace: sns, SourceWorkload: src, DestNamespace: dns, DestWorkload: dst,
			Protocol: "TCP", Port: 8080, Flows: uint64(1 + i%17), Requests: uint64(1 + i%17), Errors: uint64(i % 3), LatencyP99: time.Duration(i) * time.Millisecond}
	}
	for n := range workloads / 10 {
		ns := fmt.Sprintf("shop%02d", n)
		for i, c := range calls {
			recs = append(recs, flow(ns, c[0], ns, c[1], n*len(calls)+i))
		}
		recs = append(recs, flow(ns, "api", fmt.Sprintf("shop%02d", (n+1)%(workloads/10)), "auth", n))
	}
	// Cluster fanout: an ingress calling 60 services of one namespace, which has no flow
	// of its own, so its layered layout is a single layer of 60.
	const fanout = 60
	for i := range fanout {
		f := flow("ingress", "nginx", "apps", fmt.Sprintf("svc%02d", i), i)
		f.M.Cluster = "fanout"
		recs = append(recs, f)
	}
	m.Consume(recs)
	dir := artifactsDir(t)
	steps := runNode(t, 120*time.Second, "web/e2e/labels.mjs", srv.URL+"/map/?token="+testToken, "destroyer,aegis,fanout", dir)
	type rect [4]float64
	toRects := func(v any) []rect {
		var out []rect
		for _, x := range v.([]any) {
			if m, ok := x.(map[string]any); ok {
				x = m["r"]
			}
			var r rect
			for i, f := range x.([]any) {
				r[i] = f.(float64)
			}
			out = append(out, r)
		}
		return out
	}
	overlap := func(a, b rect) bool { // a shared edge is no collision
		return a[0] < b[2]-0.5 && a[2] > b[0]+0.5 && a[1] < b[3]-0.5 && a[3] > b[1]+0.5
	}
	// aegis-zoomed is the 300 workloads zoomed to 1:1 into the namespace group nearest
	// the middle, as a reader would.
	for _, cluster := range []string{"destroyer", "aegis", "aegis-zoomed", "fanout"} {
		s := steps[cluster]
		if s == nil {
			t.Fatalf("%s: service view never drawn: %v", cluster, steps)
		}
		boxes, labels, titles := toRects(s["boxes"]), toRects(s["labels"]), toRects(s["titles"])
		hidden, flows := int(s["hidden"].(float64)), int(s["flows"].(float64))
		if len(labels)+hidden != flows {
			t.Errorf("%s: %d labels drawn + %d left out != %d flows", cluster, len(labels), hidden, flows)
		}
		collisions := 0
		for i, l := range labels {
			for _, b := range append(boxes, titles...) {
				if overlap(l, b) {
					collisions++
				}
			}
			for _, o := range labels[i+1:] {
				if overlap(l, o) {
					collisions++
				}
			}
		}
		if collisions > 0 {
			t.Errorf("%s: %d label collisions among %d labels and %d boxes", cluster, collisions, len(labels), len(boxes))
		}
		t.Logf("%s: %d workloads, %d flows, %d labels drawn, %d on hover only, %d collisions", cluster, len(boxes), flows, len(labels), hidden, collisions)
	}
	// Fitted, the 300 workloads are 30 namespace groups, each with its title drawn in
	// view, readable, inside its own group and clear of every other title, group and box.
	fitted := steps["aegis"]
	vp := fitted["viewport"].([]any)
	titles, frames, boxes := toRects(fitted["titles"]), toRects(fitted["frames"]), toRects(fitted["boxes"])
	legend := toRects([]any{fitted["legend"]})[0]
	if len(titles) != workloads/10 || len(frames) != workloads/10 {
		t.Fatalf("aegis: %d namespace titles and %d groups drawn, want %d", len(titles), len(frames), workloads/10)
	}
	inside := func(a, b rect) bool { return a[0] >= b[0] && a[2] <= b[2] && a[1] >= b[1] && a[3] <= b[3] }
	for i, ti := range titles {
		if h := ti[3] - ti[1]; h < 9 {
			t.Errorf("aegis: title %d is %.1f px high, want at least 9", i, h)
		}
		if !inside(ti, rect{0, 0, vp[0].(float64), vp[1].(float64)}) || overlap(ti, legend) {
			t.Errorf("aegis: title %d at %v is not in the %v view or is under the legend at %v", i, ti, vp, legend)
		}
		for j, o := range titles {
			if j != i && overlap(ti, o) {
				t.Errorf("aegis: titles %d and %d collide", i, j)
			}
		}
		for j, f := range frames {
			if j == i && !inside(ti, f) || j != i && overlap(ti, f) {
				t.Errorf("aegis: title %d at %v and group %d at %v", i, ti, j, f)
			}
		}
		for _, b := range boxes {
			if overlap(ti, b) {
				t.Errorf("aegis: title %d at %v covers the workload box at %v", i, ti, b)
			}
		}
	}
	w, h := frames[0][0], frames[0][1]
	for _, f := range frames {
		w, h = max(w, f[2]), max(h, f[3])
	}
	w, h = w-frames[0][0], h-frames[0][1]
	t.Logf("aegis fitted: %d groups in %.0f x %.0f px of a %v view, titles %.1f px high", len(frames), w, h, vp, titles[0][3]-titles[0][1])
	// The 60 services called from another namespace are a block of columns, not one
	// column 60 boxes tall.
	for _, f := range toRects(steps["fanout"]["frames"]) {
		if aspect := (f[2] - f[0]) / (f[3] - f[1]); aspect < 0.5 || aspect > 3 {
			t.Errorf("fanout: a namespace group %.0f x %.0f px, want width/height in [0.5, 3]", f[2]-f[0], f[3]-f[1])
		}
	}
	// Zoomed in, the labels in view are drawn at a readable size.
	vp = steps["aegis-zoomed"]["viewport"].([]any)
	inView, small := 0, 0
	for _, l := range toRects(steps["aegis-zoomed"]["labels"]) {
		if l[2] > 0 && l[0] < vp[0].(float64) && l[3] > 0 && l[1] < vp[1].(float64) {
			inView++
			if l[3]-l[1] < 9 {
				small++
			}
		}
	}
	t.Logf("aegis zoomed to 1:1: %d labels in view, %d under 9 px high", inView, small)
	if inView < 10 || small > 0 {
		t.Errorf("aegis zoomed to 1:1: %d labels in view, %d under 9 px high; want at least 10, all readable", inView, small)
	}
	if s := steps["destroyer"]; int(s["hidden"].(float64))*2 > int(s["flows"].(float64)) {
		t.Errorf("bookinfo: %v of %v labels left out", s["hidden"], s["flows"])
	}
	if n := len(toRects(steps["aegis"]["boxes"])); n != workloads {
		t.Errorf("aegis: %d workload boxes, want %d", n, workloads)
	}
	if errs := steps["done"]["errors"]; len(errs.([]any)) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}
