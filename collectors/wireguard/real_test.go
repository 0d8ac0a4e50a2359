package wireguard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meridianhq/meridian/internal/netns"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// lab is three network namespaces, a hub A with veth links to B and C, each running
// wireguard-go; every address lives inside these namespaces.
type lab struct {
	t   *testing.T
	net *netns.Net
	ns  map[string]string      // a, b, c -> namespace
	dev map[string]string      // a, b, c -> wireguard device
	key map[string]wgtypes.Key // private keys
}

func requireRealWireGuard(t *testing.T) {
	t.Helper()
	reason, err := netns.Unavailable()
	if err != nil {
		t.Fatalf("%v (make apt-test)", err)
	}
	if reason != "" {
		t.Skip("skipping: " + reason)
	}
	for bin, pkg := range map[string]string{"wg": "wireguard-tools", "bash": "bash", "timeout": "coreutils"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: install the Debian package %s (make apt-test)", bin, pkg)
		}
	}
}

func newLab(t *testing.T) *lab {
	n, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	l := &lab{t: t, net: n, ns: map[string]string{}, dev: map[string]string{}, key: map[string]wgtypes.Key{}}
	for _, s := range []string{"a", "b", "c"} {
		if l.ns[s], err = n.AddNamespace(s); err != nil {
			t.Fatal(err)
		}
		l.dev[s] = n.DeviceName(s)
		if l.key[s], err = wgtypes.GeneratePrivateKey(); err != nil {
			t.Fatal(err)
		}
	}
	// Underlay: A-B on 10.99.1.0/24, A-C on 10.99.2.0/24.
	for i, s := range []string{"b", "c"} {
		err := n.Link(l.ns["a"], "to-"+s, netip.MustParsePrefix(fmt.Sprintf("10.99.%d.1/24", i+1)),
			l.ns[s], "to-a", netip.MustParsePrefix(fmt.Sprintf("10.99.%d.2/24", i+1)))
		if err != nil {
			t.Fatal(err)
		}
	}
	// Responders first: a handshake sent before the peer listens is retried only after 5 s.
	for _, s := range []string{"b", "c", "a"} {
		l.startWireGuard(s)
	}
	return l
}

var overlay = map[string]string{"a": "10.99.100.1", "b": "10.99.100.2", "c": "10.99.100.3"}

func (l *lab) startWireGuard(s string) {
	t := l.t
	port := 51820
	priv := l.key[s]
	cfg := wgtypes.Config{PrivateKey: &priv, ListenPort: &port, ReplacePeers: true}
	peerOf := func(p, underlay string) wgtypes.PeerConfig {
		_, ipn, _ := net.ParseCIDR(overlay[p] + "/32")
		return wgtypes.PeerConfig{
			PublicKey:  l.key[p].PublicKey(),
			Endpoint:   &net.UDPAddr{IP: net.ParseIP(underlay), Port: 51820},
			AllowedIPs: []net.IPNet{*ipn},
		}
	}
	if s == "a" {
		cfg.Peers = []wgtypes.PeerConfig{peerOf("b", "10.99.1.2"), peerOf("c", "10.99.2.2")}
	} else {
		under := map[string]string{"b": "10.99.1.1", "c": "10.99.2.1"}[s]
		cfg.Peers = []wgtypes.PeerConfig{peerOf("a", under)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.net.WireGuard(ctx, l.ns[s], l.dev[s], cfg); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", l.ns[s], "addr", "add", overlay[s]+"/24", "dev", l.dev[s]).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

// traffic sends TCP connection attempts from A to dst through the tunnel until the test
// ends; a live peer answers each with a RST, so bytes flow both ways.
func (l *lab) traffic(dst string) {
	script := fmt.Sprintf("while :; do timeout 0.3 bash -c 'echo > /dev/tcp/%s/9' 2>/dev/null; sleep 0.2; done", dst)
	cmd := exec.Command("ip", "netns", "exec", l.ns["a"], "bash", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
}

// TestRealWireGuard runs the collector as a service against three wireguard-go peers in
// network namespaces, through wgctrl and `wg show all dump`, then stops peer C.
func TestRealWireGuard(t *testing.T) {
	requireRealWireGuard(t)
	l := newLab(t)
	l.traffic(overlay["b"])
	l.traffic(overlay["c"])

	inv := &inventory.Inventory{Sites: []inventory.Site{{Name: "lab"}}}
	for _, s := range []string{"a", "b", "c"} {
		inv.Nodes = append(inv.Nodes, inventory.Node{Name: "node-" + s, Site: "lab", WireGuardKey: l.key[s].PublicKey().String()})
	}
	cfg := testConfig()
	cfg.Interval = 300 * time.Millisecond
	cfg.Timeout = 300 * time.Millisecond
	cfg.Devices = true
	cfg.DumpCommand = "wg show all dump"
	// Small silence thresholds so that the stopped peer goes down within seconds; the
	// handshake-age thresholds keep their protocol defaults (see TestStatusRule).
	cfg.SilentStale, cfg.SilentDown = 2*time.Second, 4*time.Second

	// latest keeps, per source and peer node, the newest record of device A.
	type id struct{ src, peer string }
	latest := map[id]pipeline.TunnelStat{}
	mu := make(chan struct{}, 1)
	app := pipeline.AppenderFunc(func(_ context.Context, recs ...pipeline.Record) error {
		mu <- struct{}{}
		defer func() { <-mu }()
		for _, r := range recs {
			ts := r.(*pipeline.TunnelStat)
			if ts.Interface == l.dev["a"] {
				latest[id{ts.M.Collector, ts.PeerNode}] = *ts
			}
		}
		return nil
	})
	get := func(src, peer string) (pipeline.TunnelStat, bool) {
		mu <- struct{}{}
		defer func() { <-mu }()
		ts, ok := latest[id{"wireguard/" + src, peer}]
		return ts, ok
	}
	c, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(), Appender: app, Inventory: inventory.Static(inv)})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), c) })

	sources := []string{"wgctrl", "exec:wg show all dump"}
	up := func(src, peer string) bool {
		ts, ok := get(src, peer)
		return ok && ts.Status == pipeline.StatusOK && !ts.LastHandshake.IsZero() && ts.RxBytes > 0 && ts.TxBytes > 0 && ts.RxRate > 0
	}
	for _, src := range sources {
		for _, peer := range []string{"node-b", "node-c"} {
			wait.Until(t, 20*time.Second, src+": tunnel a-"+peer+" up with traffic", func() bool { return up(src, peer) })
		}
	}
	ts, _ := get("wgctrl", "node-b")
	if ts.M.Node != "node-a" || ts.PeerSite != "lab" || ts.Endpoint != "10.99.1.2:51820" || len(ts.AllowedIPs) != 1 || time.Since(ts.LastHandshake) > time.Minute {
		t.Fatalf("record from wgctrl: %+v", ts)
	}

	l.net.StopWireGuard(l.dev["c"])
	for _, src := range sources {
		wait.Until(t, 20*time.Second, src+": tunnel a-node-c down after C stopped", func() bool {
			ts, ok := get(src, "node-c")
			return ok && ts.Status == pipeline.StatusDown
		})
		// Still up: a sample may fall between two bursts of traffic (rate 0), so wait for one.
		wait.Until(t, 5*time.Second, src+": tunnel a-node-b still up with traffic", func() bool { return up(src, "node-b") })
	}
}
