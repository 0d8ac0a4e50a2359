package keepalived

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/alerts/ruler"
	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/internal/netns"
	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/topomap"
)

// newPair makes nodes a (priority 150) and b (100) of POP lon: two namespaces joined by
// veth, each to run one keepalived.
func newPair(t *testing.T) *netns.VRRPPair {
	reason, err := netns.KeepalivedUnavailable()
	if err != nil {
		t.Fatal(err)
	}
	if reason != "" {
		t.Skip(reason)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("iptables not found: install the Debian package iptables (make apt-test)")
	}
	n, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	p, err := n.VRRPPair(netns.PairConfig{Name: "ka", Nodes: [2]string{"a", "b"}, Priorities: [2]int{150, 100},
		Instance: "VI_lon", RouterID: 77, Subnet: netip.MustParsePrefix("10.77.0.0/24"), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := range 2 {
			p.Stop(i)
			if t.Failed() {
				t.Logf("keepalived %d:\n%s", i, p.Output(i))
			}
		}
	})
	return p
}

func startNode(t *testing.T, p *netns.VRRPPair, i int) {
	t.Helper()
	if err := p.Start(i); err != nil {
		t.Fatal(err)
	}
}

// blockVRRP drops IP protocol 112 arriving in node i's namespace.
func blockVRRP(t *testing.T, p *netns.VRRPPair, i int) {
	if out, err := exec.Command("ip", "netns", "exec", p.NS[i], "iptables", "-A", "INPUT", "-p", "vrrp", "-j", "DROP").CombinedOutput(); err != nil {
		t.Fatalf("iptables in %s: %v: %s", p.NS[i], err, out)
	}
}

// Real keepalived pairs running VRRP over veth between network namespaces: stopping the
// master moves the VIP and the collector records the failover with its duration and the
// new holder; blocking VRRP between them makes both MASTER and the built-in
// MeridianVRRPSplitBrain alert fires in the embedded ruler.
func TestRealKeepalivedFailoverAndSplitBrain(t *testing.T) {
	p := newPair(t)
	var mu sync.Mutex
	var transitions []*pipeline.VRRPTransition
	latest := map[string]*pipeline.VRRPState{} // by node
	inv := &inventory.Inventory{POPs: []inventory.POP{{Name: "lon", Site: "london", VIPs: []netip.Addr{p.VIP}}}}
	popOnMap := startMap(t, inv)
	app := pipeline.AppenderFunc(func(_ context.Context, recs ...pipeline.Record) error {
		popOnMap.m.Consume(recs)
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			switch r := r.(type) {
			case *pipeline.VRRPTransition:
				transitions = append(transitions, r)
			case *pipeline.VRRPState:
				latest[r.M.Node] = r
			}
		}
		return nil
	})
	reg := prometheus.NewRegistry()
	c, err := New(Config{Interval: 200 * time.Millisecond, Nodes: []Node{{POP: "lon", Node: "a", FIFO: p.FIFO(0)}, {POP: "lon", Node: "b", FIFO: p.FIFO(1)}}},
		Deps{Inventory: inventory.Static(inv), Appender: app, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	r := startRuler(t, reg)

	state := func(node string) *pipeline.VRRPState {
		mu.Lock()
		defer mu.Unlock()
		return latest[node]
	}
	is := func(node, want string) bool { s := state(node); return s != nil && s.State == want }
	splitBrain := func() bool {
		return slices.ContainsFunc(r.Firing(), func(a alerts.Alert) bool { return a.Name == "MeridianVRRPSplitBrain" && a.Labels["pop"] == "lon" })
	}

	startNode(t, p, 0)
	startNode(t, p, 1)
	wait.Until(t, 20*time.Second, "a MASTER holding the VIP, b BACKUP", func() bool {
		return is("a", pipeline.VRRPMaster) && is("b", pipeline.VRRPBackup) && p.HoldsVIP(0) && !p.HoldsVIP(1)
	})
	if s := state("a"); !s.HoldsVIP || s.M.Site != "london" || len(s.VIPs) != 1 || s.VIPs[0] != p.VIP.String() || s.Priority != 150 {
		t.Errorf("a's state %+v, want holding %s at london, priority 150", s, p.VIP)
	}

	stopped := time.Now()
	p.Stop(0)
	var fo *pipeline.VRRPTransition
	wait.Until(t, 10*time.Second, "a failover to b recorded, the VIP on b", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, tr := range transitions {
			if tr.Failover && tr.M.Node == "b" && tr.To == pipeline.VRRPMaster {
				fo = tr
			}
		}
		return fo != nil && p.HoldsVIP(1) && !p.HoldsVIP(0)
	})
	t.Logf("failover a -> b: VIP without holder for %s (recorded); b MASTER %s after SIGTERM to a", fo.Duration, fo.M.Time.Sub(stopped))
	if fo.PreviousMaster != "a" || fo.Duration <= 0 || fo.Duration > 5*time.Second || fo.POP != "lon" || fo.M.Site != "london" || fo.M.Time.Before(stopped) {
		t.Errorf("failover %+v, want from a within 5s at lon/london", fo)
	}
	wait.Until(t, 5*time.Second, "the next state records: b holds the VIP, a not", func() bool {
		sa, sb := state("a"), state("b")
		return sb != nil && sb.HoldsVIP && sa != nil && !sa.HoldsVIP
	})
	wait.Until(t, 5*time.Second, "the map's POP lon showing b as the VIP holder", func() bool { return popOnMap.attr("vip_holder") == "b" })
	if splitBrain() {
		t.Error("a clean failover raised the split-brain alert")
	}

	// Both sides stop hearing each other; a comes back and takes the VIP too.
	blockVRRP(t, p, 0)
	blockVRRP(t, p, 1)
	startNode(t, p, 0)
	wait.Until(t, 20*time.Second, "both MASTER and the VIP on both", func() bool {
		return is("a", pipeline.VRRPMaster) && is("b", pipeline.VRRPMaster) && p.HoldsVIP(0) && p.HoldsVIP(1)
	})
	wait.Until(t, 5*time.Second, "the map's POP lon showing both as holders", func() bool { return popOnMap.attr("vip_holder") == "a,b" })
	both := time.Now()
	wait.Until(t, 30*time.Second, "MeridianVRRPSplitBrain firing for lon", splitBrain)
	t.Logf("split brain: alert firing %s after both became MASTER (rule for: 10s, evaluation 500ms)", time.Since(both).Round(100*time.Millisecond))
}

func start(t *testing.T, s services.Service) {
	t.Helper()
	if err := services.StartAndAwaitRunning(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), s) })
}

// startRuler runs the embedded ruler with only the built-in rules, over the collector's
// series.
func startRuler(t *testing.T, reg *prometheus.Registry) *ruler.Ruler {
	var cfg ruler.Config
	cfg.RegisterFlags(flag.NewFlagSet("ruler", flag.PanicOnError))
	cfg.EvaluationInterval = 500 * time.Millisecond
	cfg.DataDir = t.TempDir()
	r, err := ruler.New(cfg, ruler.Deps{SLI: sli.New(sli.Deps{}), Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store(reg, cfg.StoreSeries); err != nil {
		t.Fatal(err)
	}
	start(t, r)
	return r
}

// mapPOP is the live map fed the collector's records, read through its snapshot API.
type mapPOP struct {
	t   *testing.T
	m   *topomap.Map
	url string
}

func startMap(t *testing.T, inv *inventory.Inventory) *mapPOP {
	var cfg topomap.Config
	cfg.RegisterFlags(flag.NewFlagSet("topomap", flag.PanicOnError))
	m, err := topomap.New(cfg, topomap.Deps{Inventory: inv, APIToken: secret.New("s3cret"), Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	start(t, m)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return &mapPOP{t: t, m: m, url: srv.URL + "/map/api/snapshot"}
}

// attr is an attribute of the POP lon as the map's snapshot gives it.
func (p *mapPOP) attr(name string) string {
	req, _ := http.NewRequest("GET", p.url, nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap struct {
		Nodes []*topomap.Node `json:"nodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		p.t.Fatal(err)
	}
	for _, n := range snap.Nodes {
		if n.ID == "pop:lon" {
			return n.Attrs[name]
		}
	}
	return ""
}
