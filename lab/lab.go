package lab

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/meridianhq/meridian/collectors/hubble/hubbletest"
	"github.com/meridianhq/meridian/inventory"
)

// Config is the lab's configuration.
type Config struct {
	ListenAddress string // control API, ceph-mgr and WireGuard exporter endpoints
	Testdata      string // folder holding the real captures the lab replays
	// WireGuardNetns runs the WireGuard mesh for real: wireguard-go in network namespaces
	// (root and /dev/net/tun), read through wgctrl instead of the replayed exporters.
	WireGuardNetns bool
}

// RegisterFlags registers the lab flags.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.ListenAddress, "lab.listen-address", "127.0.0.1:9479", "Lab control API and replayed exporter endpoints.")
	f.StringVar(&c.Testdata, "lab.testdata", "testdata", "Folder with the real captures the lab replays (ceph/metrics.txt, hubble/*.json).")
	f.BoolVar(&c.WireGuardNetns, "lab.wireguard-netns", false, "Run the WireGuard mesh for real: a network namespace per site, a wireguard-go device per node (needs root and /dev/net/tun).")
}

// Lab is the running world.
type Lab struct {
	cfg    Config
	token  string
	log    *slog.Logger
	inv    *inventory.Inventory
	state  *State
	pops   map[string]*popServer
	relays []*relay
	wg     *wgNetns // nil unless cfg.WireGuardNetns
	vrrp   *vrrp
	doors  []FrontDoor
	loads  loads
	dns    string // Meridian's GeoDNS, for the load generator (UseDNS)
	ctx    context.Context
	addr   string
	done   chan struct{}
}

// Endpoints are the addresses Meridian is pointed at.
type Endpoints struct {
	Control   string            // base URL of the control API
	CephMgr   string            // ceph-mgr /metrics URL
	WireGuard map[string]string // node -> exporter /metrics URL (none with real devices)
	// WireGuardDevices are the real wireguard-go devices (-lab.wireguard-netns), read
	// through wgctrl: their UAPI sockets are in /var/run/wireguard.
	WireGuardDevices []string
	Relays           map[string]string // cluster -> Hubble Relay host:port
	Vantages         map[string]string // site -> source address its probes use
	FrontDoors       []FrontDoor       // each POP's HAProxy (or stand-in)
	VRRP             []VRRPNode        // each POP's Keepalived pair (or stand-ins)
	Inventory        *inventory.Inventory
}

// Start brings the world up on loopback; it runs until ctx ends. token guards the control API.
func Start(ctx context.Context, cfg Config, token string, log *slog.Logger) (*Lab, error) {
	l := &Lab{cfg: cfg, token: token, log: log, inv: World(), pops: map[string]*popServer{}, ctx: ctx, done: make(chan struct{})}
	l.state = newState(validator{l})
	samples, err := hubbletest.Load(filepath.Join(cfg.Testdata, "hubble", "hubble-otel-basic-sample-348-http-flows.json"))
	if err != nil {
		return nil, fmt.Errorf("lab: flows: %w", err)
	}
	mgr, err := newCephMgr(filepath.Join(cfg.Testdata, "ceph", "metrics.txt"), l.state)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("lab: listen %s: %w", cfg.ListenAddress, err)
	}
	l.addr = ln.Addr().String()
	if err := l.startPOPs(ctx); err != nil {
		ln.Close()
		return nil, err
	}
	if err := l.startFrontDoors(ctx); err != nil {
		ln.Close()
		return nil, err
	}
	if err := l.startRelays(ctx, samples); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/lab/", l.auth(l.state.Handler()))
	mux.Handle("POST /lab/load", l.auth(http.HandlerFunc(l.serveLoad)))
	mux.Handle("GET /ceph/metrics", mgr)
	if cfg.WireGuardNetns {
		if err := l.startWGNetns(ctx); err != nil {
			ln.Close()
			return nil, err
		}
	} else {
		mux.Handle("GET /wireguard/{node}/metrics", newWGExporter(l.inv, l.state))
	}
	if err := l.startVRRP(ctx); err != nil {
		ln.Close()
		if l.wg != nil {
			_ = l.wg.close()
		}
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("lab: HTTP server", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
		if l.wg != nil {
			if err := l.wg.close(); err != nil {
				log.Error("lab: removing WireGuard namespaces", "err", err)
			}
		}
		if err := l.vrrp.close(); err != nil {
			log.Error("lab: stopping the Keepalived pairs", "err", err)
		}
		close(l.done)
	}()
	log.Info("lab running", "control", "http://"+l.addr+"/lab/state")
	return l, nil
}

func (l *Lab) auth(h http.Handler) http.Handler {
	want := []byte("Bearer " + l.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Done is closed once the lab has stopped after its context ended, and has removed what
// it made outside the process (namespaces and the processes in them).
func (l *Lab) Done() <-chan struct{} { return l.done }

// startWGNetns builds the real WireGuard mesh and makes tunnel failures break it.
func (l *Lab) startWGNetns(ctx context.Context) error {
	wg, err := startWGNetns(ctx, l.inv)
	if err != nil {
		return err
	}
	l.wg = wg
	go wg.traffic(ctx, l.inv)
	l.state.onChange = append(l.state.onChange, func(f Failure, failed bool) {
		if f.Kind != "tunnel" {
			return
		}
		if err := wg.setTunnel(f.Target, !failed); err != nil {
			l.log.Error("lab: WireGuard tunnel", "tunnel", f.Target, "failed", failed, "err", err)
		}
	})
	l.log.Info("lab: WireGuard mesh in network namespaces", "devices", len(wg.devices), "tag", wg.net.Tag)
	return nil
}

// State is the lab's failure state.
func (l *Lab) State() *State { return l.state }

// Endpoints returns where the lab's peers listen.
func (l *Lab) Endpoints() Endpoints {
	e := Endpoints{
		Control:    "http://" + l.addr,
		CephMgr:    "http://" + l.addr + "/ceph/metrics",
		WireGuard:  map[string]string{},
		Relays:     map[string]string{},
		Vantages:   map[string]string{},
		Inventory:  l.inv,
		FrontDoors: l.doors,
		VRRP:       l.vrrp.nodes,
	}
	if l.wg != nil {
		e.WireGuardDevices = l.wg.devices
	} else {
		for _, n := range l.inv.Nodes {
			e.WireGuard[n.Name] = "http://" + l.addr + "/wireguard/" + n.Name + "/metrics"
		}
	}
	for _, r := range l.relays {
		e.Relays[r.cluster] = r.srv.Addr()
	}
	for _, s := range siteNames(l.inv) {
		a, _ := l.VantageAddr(s)
		e.Vantages[s] = a.String()
	}
	return e
}

func (l *Lab) popNames() []string {
	names := make([]string, 0, len(l.pops))
	for n := range l.pops {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// normalize puts a tunnel target's sites in SitePair order.
func normalize(f Failure) Failure {
	if a, b, ok := strings.Cut(f.Target, "-"); ok && f.Kind == "tunnel" {
		f.Target = SitePair(a, b)
	}
	return f
}
