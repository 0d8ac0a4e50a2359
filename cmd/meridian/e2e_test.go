package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/lab"
	"github.com/meridianhq/meridian/topomap"
)

// The lab's VIPs and client subnets (lab/world.go). France may be served from anywhere;
// Germany's data stays in the EU, where api has only the Nuremberg POP.
const (
	newYorkVIP    = "127.0.2.2"
	nurembergVIP  = "127.0.2.3"
	franceSubnet  = "198.51.100.0/26"
	germanySubnet = "198.51.100.64/26"
)

// TestLabEndToEnd runs the lab and every Meridian module in this process, fails the
// Nuremberg POP and checks each consequence within its budget, then heals it; then fails
// the New York–Nuremberg tunnel and a New York OSD in turn and checks the map names each
// as the cause beneath what it breaks (the calm map names none). Each step's time is
// printed as "E2E <step> <seconds> s budget=<seconds>" for the README.
func TestLabEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("kdig"); err != nil {
		t.Fatal("kdig not found: install Debian package knot-dnsutils (make apt-test)")
	}
	amURL, hook := amtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs, _ := os.Create(filepath.Join(t.TempDir(), "meridian.log"))
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("meridian log:\n%s", lastLines(string(b), 60))
		}
	})

	const token = "e2e-token"
	l, err := lab.Start(ctx, lab.Config{ListenAddress: "127.0.0.1:0", Testdata: "../../testdata"}, token, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-l.Done() }() // the lab's namespaces and daemons go before the test ends
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", amtest.FreePort(t))
	cfg, err := parseConfig([]string{
		"-server.listen-address=127.0.0.1:0", "-server.token-file=" + tokenFile,
		"-storage.path=" + enginePath, "-storage.database=e2e", "-pipeline.spool.path=" + filepath.Join(dir, "spool"),
		"-ruler.data-dir=" + filepath.Join(dir, "ruler"), "-hubble.state-dir=" + filepath.Join(dir, "hubble"), "-ruler.evaluation-interval=1s", "-ruler.resend-delay=2s",
		"-ruler.alertmanager-urls=" + amURL,
		// The shipped POP availability SLO over a 1-hour period with second-scale windows,
		// so the page fires and resolves within the test (testdata/slo/README.md).
		"-ruler.spec-files=../../testdata/slo/ruler/fast-pop.yaml",
		"-ruler.window-files=../../testdata/slo/ruler/fast-windows.yaml",
		"-steering.dns.listen=" + dnsAddr, "-steering.dns.zone=" + lab.Zone, "-steering.min-hold=5s", "-steering.ramp-interval=1s",
		"-topomap.tick=100ms",
		// Tunnels and OSDs read every 2 s, so a failure reaches the map's causes in seconds.
		"-wireguard.interval=2s", "-wireguard.timeout=1s", "-ceph.interval=2s", "-ceph.timeout=1s",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a, base := serveOverLab(t, cfg, l, logger)
	dig := func() string { return kdig(t, dnsAddr, franceSubnet, "api."+lab.Zone) }
	// The calm world names no cause once it settled (steering's first weights, the
	// first probes).
	var named []string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last causes named: %s", strings.Join(named, "; "))
		}
	})
	watch(t, time.Now(), []check{
		{"steady: France is answered from Nuremberg", 60 * time.Second, func() bool { return dig() == nurembergVIP }},
		{"calm: the map, every layer observed, names no cause", 60 * time.Second, func() bool {
			snap := mapSnapshot(t, base, token)
			named = causesNamed(snap)
			seen := map[string]bool{}
			for _, n := range snap.Nodes {
				seen[n.Kind] = seen[n.Kind] || n.Status != "unknown"
			}
			for _, e := range snap.Edges {
				seen[e.Kind] = seen[e.Kind] || e.Status != "unknown"
			}
			seen["cross-site flow"] = len(crossSiteFlows(snap)) > 0
			return len(named) == 0 && seen["flow"] && seen["workload"] && seen["tunnel"] && seen["osd"] && seen["probe"] && seen["steer"] && seen["region"] &&
				seen["cross-site flow"]
		}},
		// Both relays see New York's calls to Nuremberg's productpage; the map draws each
		// once, from New York's view, and Nuremberg's relay counts none of them on its own
		// ratings → productpage edge (a phantom New York client inside its cluster would
		// double it against New York's same local edge: both replay the same capture).
		{"calm: the calls across the mesh are stored from both ends and drawn once, no phantom client in Nuremberg", 60 * time.Second, func() bool {
			const views = `SELECT countIf(cluster = 'nbg-aegis' AND src_cluster = 'ny-destroyer') > 0 AND countIf(cluster = 'ny-destroyer' AND dst_cluster = 'nbg-aegis') > 0
				FROM e2e.flow_edges WHERE dst_workload LIKE 'productpage%'`
			const phantom = `SELECT sumIf(flows, cluster = 'nbg-aegis') * 2 > sumIf(flows, cluster = 'ny-destroyer') * 3 FROM e2e.flow_edges
				WHERE src_cluster = '' AND dst_cluster = '' AND src_workload LIKE 'ratings%' AND dst_workload LIKE 'productpage%' AND time > now() - INTERVAL 30 SECOND`
			snap := mapSnapshot(t, base, token)
			return queryInt(t, a, views) == 1 && queryInt(t, a, phantom) == 0 && oneEdgePerPairAcross(snap)
		}},
	})

	failedAt := time.Now()
	if err := l.State().Fail(lab.Failure{Kind: "pop", Target: "nuremberg"}); err != nil {
		t.Fatal(err)
	}
	since := failedAt.UTC().Format("2006-01-02 15:04:05.000")
	watch(t, failedAt, []check{
		{"probes of Nuremberg fail (stored in ClickHouse)", 10 * time.Second, func() bool {
			return queryInt(t, a, "SELECT count() FROM e2e.probes WHERE pop = 'nuremberg' AND method != 'dns' AND NOT success AND time >= '"+since+"'") > 0
		}},
		{"the map shows the Nuremberg POP down", 10 * time.Second, func() bool {
			return mapStatus(t, base, token, "pop:nuremberg") == "down"
		}},
		{"steering drains Nuremberg", 10 * time.Second, func() bool {
			return weight(t, base, token, "api."+lab.Zone, "france", "nuremberg") == 0
		}},
		{"kdig from a French subnet gets the next best POP, New York", 10 * time.Second, func() bool {
			return dig() == newYorkVIP
		}},
		{"the decision is in ClickHouse with its reason", 10 * time.Second, func() bool {
			return queryInt(t, a, "SELECT count() FROM e2e.steering_decisions WHERE pop = 'nuremberg' AND client_region = 'france' AND new_weight = 0 AND reason != '' AND time >= '"+since+"'") > 0
		}},
		{"the map names France's drain from Nuremberg as its regret's cause", 10 * time.Second, func() bool {
			snap := mapSnapshot(t, base, token)
			named = causesNamed(snap)
			for _, n := range snap.Nodes {
				if n.ID == "region:france" {
					return len(n.Causes) > 0 && strings.HasPrefix(n.Causes[0].ID, "steer:france->nuremberg/")
				}
			}
			return false
		}},
		{"the page-severity SLO alert reaches Alertmanager, naming a failed probe of Nuremberg as its cause", 90 * time.Second, func() bool {
			msg, ok := hook.Find("firing", map[string]string{"alertname": "MeridianPOPAvailability", "pop": "nuremberg", "sloth_severity": "page"})
			return ok && strings.HasPrefix(msg.Alerts[0].Annotations["meridian_cause"], "probe:") &&
				strings.Contains(msg.Alerts[0].Annotations["meridian_cause"], "->nuremberg/")
		}},
	})

	// Residency: with its only allowed POP down, Germany is still answered inside the EU
	// (fail-open within the allowed set), never from New York.
	if got := kdig(t, dnsAddr, germanySubnet, "api."+lab.Zone); got != nurembergVIP {
		t.Errorf("germany while Nuremberg is down: %q, want %s (fail-open inside its allowed set)", got, nurembergVIP)
	}

	healedAt := time.Now()
	l.State().Heal()
	watch(t, healedAt, []check{
		{"heal: the alert resolves in Alertmanager", 120 * time.Second, func() bool {
			_, ok := hook.Find("resolved", map[string]string{"alertname": "MeridianPOPAvailability", "pop": "nuremberg"})
			return ok
		}},
		{"heal: traffic ramps back to Nuremberg", 120 * time.Second, func() bool {
			return weight(t, base, token, "api."+lab.Zone, "france", "nuremberg") == 1 && dig() == nurembergVIP
		}},
	})

	// The tunnel: the requests of New York's and Nuremberg's workloads fail (the lab's
	// relays answer 503 over it); every erring flow there names a New York–Nuremberg
	// tunnel first, and so do the flows from New York's cluster to Nuremberg's, which
	// cross it.
	failedAt = time.Now()
	if err := l.State().Fail(lab.Failure{Kind: "tunnel", Target: "newyork-nuremberg"}); err != nil {
		t.Fatal(err)
	}
	crossSite := func(c topomap.Cause) bool {
		return c.Kind == "tunnel" && strings.Contains(c.ID, "node:ny-") && strings.Contains(c.ID, "node:nbg-")
	}
	watch(t, failedAt, []check{
		{"the map attributes New York's and Nuremberg's erring flows to the tunnel", 60 * time.Second, func() bool {
			snap := mapSnapshot(t, base, token)
			named = causesNamed(snap)
			return causedBy(snap, "flow", []string{"ny-destroyer", "nbg-aegis"}, crossSite)
		}},
		{"the flows from New York's cluster to Nuremberg's err, the tunnel between them their first cause", 60 * time.Second, func() bool {
			snap := mapSnapshot(t, base, token)
			cross := crossSiteFlows(snap)
			for _, e := range cross {
				if (e.Status != "degraded" && e.Status != "down") || len(e.Causes) == 0 || !crossSite(e.Causes[0]) {
					return false
				}
			}
			return len(cross) > 0
		}},
	})
	healedAt = time.Now()
	l.State().Heal()
	watch(t, healedAt, []check{{"heal: no flow names a cause", 60 * time.Second, func() bool {
		for _, e := range mapSnapshot(t, base, token).Edges {
			if e.Kind == "flow" && len(e.Causes) > 0 {
				return false
			}
		}
		return true
	}}})

	// A slow OSD of the New York vault: New York's compute workloads (their volumes are
	// on it) name it first, with its host.
	failedAt = time.Now()
	if err := l.State().Fail(lab.Failure{Kind: "osd", Target: "3", Mode: "slow"}); err != nil {
		t.Fatal(err)
	}
	watch(t, failedAt, []check{
		{"the map names the slow OSD beneath New York's workloads", 60 * time.Second, func() bool {
			snap := mapSnapshot(t, base, token)
			named = causesNamed(snap)
			return causedBy(snap, "workload", []string{"ny-destroyer"}, func(c topomap.Cause) bool {
				return c.Kind == "osd" && strings.HasSuffix(c.ID, ".3") && strings.Contains(c.Evidence, "osd.3 on vault-2")
			})
		}},
	})
	if named := causesNamed(mapSnapshot(t, base, token)); slices.ContainsFunc(named, func(s string) bool {
		return strings.Contains(s, "← osd:") && !strings.HasPrefix(s, "workload:ny-destroyer/")
	}) {
		t.Errorf("a slow New York OSD is named beneath more than New York's workloads: %s", strings.Join(named, "; "))
	}
}

// mapSnap is the map's JSON snapshot (GET /map/api/snapshot).
type mapSnap struct {
	Nodes []topomap.Node `json:"nodes"`
	Edges []topomap.Edge `json:"edges"`
}

// mapSnapshot reads the map's JSON snapshot.
func mapSnapshot(t *testing.T, base, token string) (snap mapSnap) {
	getJSON(t, base+"/map/api/snapshot", token, &snap)
	return snap
}

// causesNamed lists "element ← its first cause" for every element naming one.
func causesNamed(snap mapSnap) []string {
	var out []string
	for _, n := range snap.Nodes {
		if len(n.Causes) > 0 {
			out = append(out, n.ID+" ← "+n.Causes[0].ID)
		}
	}
	for _, e := range snap.Edges {
		if len(e.Causes) > 0 {
			out = append(out, e.ID+" ← "+e.Causes[0].ID)
		}
	}
	return out
}

// causedBy reports whether every cluster has a degraded or down element of kind (a flow
// by its source workload's cluster), and every such element of those clusters names a
// first cause that is the one.
func causedBy(snap mapSnap, kind string, clusters []string, is func(topomap.Cause) bool) bool {
	clusterOf := map[string]string{}
	type elem struct {
		cluster, status string
		causes          []topomap.Cause
	}
	var elems []elem
	for _, n := range snap.Nodes {
		clusterOf[n.ID] = n.Cluster
		if n.Kind == kind {
			elems = append(elems, elem{n.Cluster, n.Status, n.Causes})
		}
	}
	for _, e := range snap.Edges {
		if e.Kind == kind {
			elems = append(elems, elem{clusterOf[e.Source], e.Status, e.Causes})
		}
	}
	bad := map[string]bool{}
	for _, e := range elems {
		if !slices.Contains(clusters, e.cluster) || (e.status != "degraded" && e.status != "down") {
			continue
		}
		if len(e.causes) == 0 || !is(e.causes[0]) {
			return false
		}
		bad[e.cluster] = true
	}
	return len(bad) == len(clusters)
}

// crossSiteFlows are the map's flow edges from a workload of New York's compute cluster
// to one of Nuremberg's (the lab's cluster mesh, lab/hubble.go).
func crossSiteFlows(snap mapSnap) []topomap.Edge {
	clusterOf := map[string]string{}
	for _, n := range snap.Nodes {
		clusterOf[n.ID] = n.Cluster
	}
	var out []topomap.Edge
	for _, e := range snap.Edges {
		if e.Kind == "flow" && clusterOf[e.Source] == "ny-destroyer" && clusterOf[e.Target] == "nbg-aegis" {
			out = append(out, e)
		}
	}
	return out
}

// oneEdgePerPairAcross: every flow edge between two clusters goes from New York's compute
// cluster to Nuremberg's, shows New York's relay's view, and is the only one of its
// workload pair; there is at least one.
func oneEdgePerPairAcross(snap mapSnap) bool {
	nodes := map[string]topomap.Node{}
	for _, n := range snap.Nodes {
		nodes[n.ID] = n
	}
	pairs := map[string]int{}
	for _, e := range snap.Edges {
		src, dst := nodes[e.Source], nodes[e.Target]
		if e.Kind != "flow" || src.Cluster == dst.Cluster {
			continue
		}
		if src.Cluster != "ny-destroyer" || dst.Cluster != "nbg-aegis" || e.Attrs["observed_in"] != "ny-destroyer" {
			return false
		}
		pairs[src.Label+" -> "+dst.Label+" "+e.Attrs["protocol"]+"/"+e.Attrs["port"]]++
	}
	for _, n := range pairs {
		if n != 1 {
			return false
		}
	}
	return len(pairs) > 0
}

// check is one expected consequence and how long after its cause it may take.
type check struct {
	what   string
	budget time.Duration
	cond   func() bool
}

// watch polls every check until each has held once, and prints the time from the cause to
// the first time each held, so that one slow consequence does not hide a fast one.
func watch(t *testing.T, from time.Time, checks []check) {
	t.Helper()
	pending := checks
	for len(pending) > 0 {
		var still []check
		for _, c := range pending {
			switch {
			case c.cond():
				fmt.Printf("E2E %q %.1f s budget=%.0f\n", c.what, time.Since(from).Seconds(), c.budget.Seconds())
			case time.Since(from) > c.budget:
				t.Fatalf("%s: not within %s", c.what, c.budget)
			default:
				still = append(still, c)
			}
		}
		pending = still
		time.Sleep(100 * time.Millisecond)
	}
}

func kdig(t *testing.T, server, subnet, name string) string {
	t.Helper()
	host, port, _ := strings.Cut(server, ":")
	out, err := exec.Command("kdig", "@"+host, "-p", port, "+subnet="+subnet, "+short", "+time=1", "+retry=0", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// serveOverLab runs Meridian with cfg pointed at the lab l until the test ends, and
// returns it with its HTTP base URL.
func serveOverLab(t *testing.T, cfg *Config, l *lab.Lab, logger *slog.Logger) (*app, string) {
	t.Helper()
	labOverlay(cfg, l.Endpoints())
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := newApp(cfg, logger)
	return a, startApp(t, a)
}

func queryInt(t *testing.T, a *app, sql string) int {
	t.Helper()
	if a.store == nil {
		return 0
	}
	out, err := a.store.Query(context.Background(), sql, "TSV")
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var n int
	fmt.Sscan(string(out), &n)
	return n
}

func getJSON(t *testing.T, url, token string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func mapStatus(t *testing.T, base, token, id string) string {
	var snap struct {
		Nodes []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"nodes"`
	}
	getJSON(t, base+"/map/api/snapshot?token="+token, token, &snap)
	for _, n := range snap.Nodes {
		if n.ID == id {
			return n.Status
		}
	}
	return ""
}

func weight(t *testing.T, base, token, service, region, pop string) float64 {
	var w struct {
		Entries []struct {
			Service, Region, POP string
			Weight               float64
		} `json:"entries"`
	}
	getJSON(t, base+"/api/steering/weights", token, &w)
	for _, e := range w.Entries {
		if e.Service == service && e.Region == region && e.POP == pop {
			return e.Weight
		}
	}
	return -1
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
