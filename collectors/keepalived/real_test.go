package keepalived

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
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

const vip = "10.77.0.100"

// pair is two namespaces joined by veth, each to run one keepalived.
type pair struct {
	t    *testing.T
	dir  string
	ns   map[string]string    // node -> namespace
	proc map[string]*exec.Cmd // node -> running keepalived
	out  map[string]*bytes.Buffer
}

func newPair(t *testing.T) *pair {
	reason, err := netns.Unavailable()
	if err != nil {
		t.Fatal(err)
	}
	if reason != "" {
		t.Skip(reason)
	}
	for bin, pkg := range map[string]string{"keepalived": "keepalived", "iptables": "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: install the Debian package %s (make apt-test)", bin, pkg)
		}
	}
	n, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	p := &pair{t: t, dir: t.TempDir(), ns: map[string]string{}, proc: map[string]*exec.Cmd{}, out: map[string]*bytes.Buffer{}}
	for _, node := range []string{"a", "b"} {
		if p.ns[node], err = n.AddNamespace("ka" + node); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Link(p.ns["a"], "vrrp0", netip.MustParsePrefix("10.77.0.1/24"), p.ns["b"], "vrrp0", netip.MustParsePrefix("10.77.0.2/24")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for node := range p.proc {
			p.stop(node)
		}
		if t.Failed() {
			for node, b := range p.out {
				t.Logf("keepalived %s:\n%s", node, b)
			}
		}
	})
	return p
}

func (p *pair) fifo(node string) string { return filepath.Join(p.dir, node+".fifo") }

// start runs keepalived for node in the foreground, VRRP only, priority prio.
func (p *pair) start(node string, prio int) {
	conf := fmt.Sprintf(`global_defs {
  notify_fifo %s
  router_id fd-%s
}
vrrp_instance VI_lon {
  state BACKUP
  interface vrrp0
  virtual_router_id 77
  priority %d
  advert_int 1
  virtual_ipaddress {
    %s/24
  }
}
`, p.fifo(node), node, prio, vip)
	path := filepath.Join(p.dir, node+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		p.t.Fatal(err)
	}
	if p.out[node] == nil {
		p.out[node] = &bytes.Buffer{}
	}
	cmd := exec.Command("ip", "netns", "exec", p.ns[node], "keepalived", "--dont-fork", "--log-console", "--vrrp",
		"-f", path, "-p", filepath.Join(p.dir, node+".pid"), "-r", filepath.Join(p.dir, node+".vrrp.pid"))
	cmd.Stdout, cmd.Stderr = p.out[node], p.out[node]
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.proc[node] = cmd
}

// stop ends node's keepalived as systemd does (SIGTERM) and waits for it.
func (p *pair) stop(node string) {
	if cmd := p.proc[node]; cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		delete(p.proc, node)
	}
}

// holdsVIP reports whether the VIP is on node's interface: what clients actually reach.
func (p *pair) holdsVIP(node string) bool {
	out, err := exec.Command("ip", "-n", p.ns[node], "-o", "addr", "show", "dev", "vrrp0").Output()
	return err == nil && strings.Contains(string(out), " "+vip+"/")
}

// blockVRRP drops IP protocol 112 arriving in node's namespace.
func (p *pair) blockVRRP(node string) {
	if out, err := exec.Command("ip", "netns", "exec", p.ns[node], "iptables", "-A", "INPUT", "-p", "vrrp", "-j", "DROP").CombinedOutput(); err != nil {
		p.t.Fatalf("iptables in %s: %v: %s", node, err, out)
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
	inv := &inventory.Inventory{POPs: []inventory.POP{{Name: "lon", Site: "london", VIPs: []netip.Addr{netip.MustParseAddr(vip)}}}}
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
	c, err := New(Config{Interval: 200 * time.Millisecond, Nodes: []Node{{POP: "lon", Node: "a", FIFO: p.fifo("a")}, {POP: "lon", Node: "b", FIFO: p.fifo("b")}}},
		Deps{Inventory: inv, Appender: app, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
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

	p.start("a", 150)
	p.start("b", 100)
	wait.Until(t, 20*time.Second, "a MASTER holding the VIP, b BACKUP", func() bool {
		return is("a", pipeline.VRRPMaster) && is("b", pipeline.VRRPBackup) && p.holdsVIP("a") && !p.holdsVIP("b")
	})
	if s := state("a"); !s.HoldsVIP || s.M.Site != "london" || len(s.VIPs) != 1 || s.VIPs[0] != vip || s.Priority != 150 {
		t.Errorf("a's state %+v, want holding %s at london, priority 150", s, vip)
	}

	stopped := time.Now()
	p.stop("a")
	var fo *pipeline.VRRPTransition
	wait.Until(t, 10*time.Second, "a failover to b recorded, the VIP on b", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, tr := range transitions {
			if tr.Failover && tr.M.Node == "b" && tr.To == pipeline.VRRPMaster {
				fo = tr
			}
		}
		return fo != nil && p.holdsVIP("b") && !p.holdsVIP("a")
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
	p.blockVRRP("a")
	p.blockVRRP("b")
	p.start("a", 150)
	wait.Until(t, 20*time.Second, "both MASTER and the VIP on both", func() bool {
		return is("a", pipeline.VRRPMaster) && is("b", pipeline.VRRPMaster) && p.holdsVIP("a") && p.holdsVIP("b")
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
