package geodns

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

type sink struct {
	mu     sync.Mutex
	probes []*pipeline.Probe
}

func (s *sink) Append(_ context.Context, recs ...pipeline.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.probes = append(s.probes, r.(*pipeline.Probe))
	}
	return nil
}

func (s *sink) find(pred func(*pipeline.Probe) bool) *pipeline.Probe {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.probes {
		if pred(p) {
			return p
		}
	}
	return nil
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestProberOnLoopback(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(ok.Close)
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	t.Cleanup(sick.Close)
	inv := &inventory.Inventory{
		Sites: []inventory.Site{{Name: "lab"}, {Name: "edge"}},
		POPs: []inventory.POP{
			{Name: "up", Site: "edge", VIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, HealthURL: ok.URL + "/healthz", TCPAddr: ok.Listener.Addr().String()},
			{Name: "sick", Site: "edge", HealthURL: sick.URL + "/healthz"},
			{Name: "gone", Site: "edge", TCPAddr: closedPort(t)},
		},
	}
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	cfg.Vantages, cfg.Interval = Vantages{{Site: "lab"}}, 100*time.Millisecond
	p, out := startProber(t, cfg, inventory.Static(inv))

	for _, tc := range []struct {
		what    string
		method  string
		pop     string
		success bool
		errHas  string
	}{
		{"tcp connect to a listening POP", "tcp", "up", true, ""},
		{"http ttfb from a healthy POP", "http", "up", true, ""},
		{"http 503 counts as failure", "http", "sick", false, "503"},
		{"tcp to a closed port fails", "tcp", "gone", false, "refused"},
	} {
		wait.Until(t, 10*time.Second, tc.what, func() bool {
			return out.find(func(r *pipeline.Probe) bool { return r.Method == tc.method && r.POP == tc.pop }) != nil
		})
		r := out.find(func(r *pipeline.Probe) bool { return r.Method == tc.method && r.POP == tc.pop })
		if r.Success != tc.success || !strings.Contains(r.Error, tc.errHas) || r.Vantage != "lab" || r.M.Site != "lab" || r.M.Time.IsZero() {
			t.Errorf("%s: got %+v", tc.what, r)
		}
		if tc.success && r.RTT <= 0 {
			t.Errorf("%s: RTT %v, want > 0", tc.what, r.RTT)
		}
	}

	// ICMP runs only where the process may open an ICMP socket; say so when it cannot.
	if c, _, err := icmpSocket(false); err != nil {
		t.Logf("ICMP probe not checked: %v", err)
	} else {
		c.Close()
		wait.Until(t, 10*time.Second, "an icmp echo reply from 127.0.0.1", func() bool {
			return out.find(func(r *pipeline.Probe) bool { return r.Method == "icmp" && r.POP == "up" && r.Success }) != nil
		})
	}

	// The matrix sees the closed port failing again and again.
	wait.Until(t, 10*time.Second, "gone to be judged down", func() bool {
		return p.Matrix().Health(time.Time{}, 3, 1)["gone"].Down
	})
	if h := p.Matrix().Health(time.Time{}, 3, 1)["up"]; h.Down {
		t.Fatalf("healthy POP judged down: %+v", h)
	}
}

func TestMatrixQuorum(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name    string
		failing []string // vantages failing (3 times each)
		fresh   []string // vantages reporting success
		stale   []string // vantages failing long ago
		quorum  int
		down    bool
	}{
		{"one of three, majority", []string{"a"}, []string{"b", "c"}, nil, 0, false},
		{"two of three, majority", []string{"a", "b"}, []string{"c"}, nil, 0, true},
		{"one of three, quorum 1", []string{"a"}, []string{"b", "c"}, nil, 1, true},
		{"stale vantages do not vote", nil, []string{"c"}, []string{"a", "b"}, 0, false},
		{"single vantage failing", []string{"a"}, nil, nil, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMatrix()
			obs := func(v string, ok bool, at time.Time) {
				m.Observe(&pipeline.Probe{M: pipeline.Meta{Time: at}, Vantage: v, POP: "p", Method: "http", Success: ok, RTT: time.Millisecond})
			}
			for _, v := range tc.failing {
				for range 3 {
					obs(v, false, now)
				}
			}
			for _, v := range tc.fresh {
				obs(v, true, now)
			}
			for _, v := range tc.stale {
				for range 3 {
					obs(v, false, now.Add(-time.Minute))
				}
			}
			if got := m.Health(now.Add(-10*time.Second), 2, tc.quorum)["p"].Down; got != tc.down {
				t.Fatalf("down = %v, want %v", got, tc.down)
			}
		})
	}
	// A success resets the run; a DNS probe says nothing about the POP.
	m := NewMatrix()
	m.Observe(&pipeline.Probe{M: pipeline.Meta{Time: now}, Vantage: "a", POP: "p", Method: "tcp"})
	m.Observe(&pipeline.Probe{M: pipeline.Meta{Time: now}, Vantage: "a", POP: "p", Method: "tcp", Success: true, RTT: 5 * time.Millisecond})
	m.Observe(&pipeline.Probe{M: pipeline.Meta{Time: now}, Vantage: "a", POP: "p", Method: "dns"})
	if c := m.Cells(time.Time{}); len(c) != 1 || c[0].Failures != 0 || c[0].RTT != 5*time.Millisecond {
		t.Fatalf("cells = %+v", c)
	}
}

func TestConfigValidate(t *testing.T) {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults (no vantage: no probes) must be valid: %v", err)
	}
	cfg.Vantages, cfg.DNSServer = Vantages{{Site: "lab"}}, "no-port"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "geodns.dns_server") {
		t.Fatalf("err = %v, want it to name geodns.dns_server", err)
	}
	cfg.DNSServer, cfg.FastInterval = "", -time.Second
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "geodns.fast_interval") {
		t.Fatalf("err = %v, want it to name geodns.fast_interval", err)
	}
}

// TestVantagesProbeFromTheirSourceAddress runs two vantages in one collector and checks
// that each one's probes leave from its own loopback address and carry its name.
func TestVantagesProbeFromTheirSourceAddress(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		seen[host] = true
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	inv := &inventory.Inventory{
		Sites: []inventory.Site{{Name: "paris"}, {Name: "tokyo"}, {Name: "edge"}},
		POPs:  []inventory.POP{{Name: "p", Site: "edge", HealthURL: srv.URL}},
	}
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	if err := cfg.Vantages.Set("paris=127.0.1.77,tokyo=127.0.1.78"); err != nil {
		t.Fatal(err)
	}
	cfg.Interval, cfg.ICMP = 50*time.Millisecond, false
	_, out := startProber(t, cfg, inventory.Static(inv))
	for _, v := range []string{"paris", "tokyo"} {
		wait.Until(t, 10*time.Second, v+" probes", func() bool {
			return out.find(func(r *pipeline.Probe) bool { return r.Vantage == v && r.M.Site == v && r.Success }) != nil
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if !seen["127.0.1.77"] || !seen["127.0.1.78"] || len(seen) != 2 {
		t.Fatalf("probes came from %v, want 127.0.1.77 and 127.0.1.78 only", seen)
	}
}

func TestVantagesValidate(t *testing.T) {
	for flagValue, want := range map[string]string{
		"paris,paris":       "duplicate vantage",
		"=127.0.0.1":        "site: empty",
		"paris=not-an-addr": "source_address",
	} {
		var c Config
		c.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
		_ = c.Vantages.Set(flagValue)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", flagValue, err, want)
		}
	}
}

// TestFirstFailureIsConfirmedFast: after a success, a failed probe is followed by the
// next one after fast_interval, not a whole interval; further failures of the same run
// go back to the interval, so a dead POP is not probed faster for ever.
func TestFirstFailureIsConfirmedFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	inv := &inventory.Inventory{
		Sites: []inventory.Site{{Name: "lab"}, {Name: "edge"}},
		POPs:  []inventory.POP{{Name: "p", Site: "edge", TCPAddr: addr}},
	}
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	cfg.Vantages, cfg.Interval, cfg.FastInterval, cfg.ICMP = Vantages{{Site: "lab"}}, 2*time.Second, 100*time.Millisecond, false
	_, out := startProber(t, cfg, inventory.Static(inv))
	wait.Until(t, 10*time.Second, "a successful probe", func() bool { return out.find(func(r *pipeline.Probe) bool { return r.Success }) != nil })
	l.Close() // the POP goes away: connections are refused from now on
	var fails []time.Time
	wait.Until(t, 15*time.Second, "three failed probes", func() bool {
		fails = fails[:0]
		out.mu.Lock()
		defer out.mu.Unlock()
		for _, r := range out.probes {
			if !r.Success {
				fails = append(fails, r.M.Time)
			}
		}
		return len(fails) >= 3
	})
	// Jitter is 20%: a regular wait is at least 1.6 s.
	if gap := fails[1].Sub(fails[0]); gap > time.Second {
		t.Errorf("second failure %v after the first, want about fast_interval (100ms)", gap)
	}
	if gap := fails[2].Sub(fails[1]); gap < 1500*time.Millisecond {
		t.Errorf("third failure %v after the second, want the regular interval (2s ± 20%%)", gap)
	}
}

// startProber runs a prober until the test ends, with the sink its records go to; each
// of before is applied to it first.
func startProber(t *testing.T, cfg Config, inv inventory.View, before ...func(*Prober)) (*Prober, *sink) {
	t.Helper()
	out := &sink{}
	p, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(), Appender: out, Inventory: inv})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range before {
		f(p)
	}
	if err := services.StartAndAwaitRunning(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), p) })
	return p, out
}

// alwaysStalled makes every moment a stall of the prober.
func alwaysStalled(p *Prober) { p.stalls = newStallWatch(-time.Hour, time.Now()) }

func (s *sink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.probes)
}

func TestStallWatch(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	w := newStallWatch(200*time.Millisecond, t0)
	for _, ms := range []int{50, 100, 150} {
		if _, stalled := w.woke(at(ms)); stalled {
			t.Fatalf("a wake-up on time at %d ms taken for a stall", ms)
		}
	}
	if d, stalled := w.woke(at(1150)); !stalled || d != time.Second {
		t.Fatalf("woke 1 s after the last wake-up: stall %v %v, want 1s true", d, stalled)
	}
	w.woke(at(1200))
	// Starved without one long stall: every wake-up 60 ms late, 240 ms lost in 440 ms.
	for _, ms := range []int{1310, 1420, 1530, 1640} {
		if _, stalled := w.woke(at(ms)); stalled {
			t.Fatalf("a wake-up 60 ms late at %d ms taken for a stall on its own", ms)
		}
	}
	for _, tc := range []struct {
		from, to, now int
		want          bool
	}{
		{0, 140, 1200, false},     // before the stall
		{100, 900, 1200, true},    // began before it, ended inside
		{1160, 1190, 1200, false}, // after it
		{1210, 1650, 1650, true},  // across the four late wake-ups: 240 ms lost
		{1210, 1420, 1650, false}, // across two of them: 120 ms lost
		{1650, 2000, 2000, true},  // the watch has not woken for 350 ms: a stall still going on
		{1650, 1680, 1690, false}, // the watch woke 40 ms ago
	} {
		if got := w.during(at(tc.from), at(tc.to), at(tc.now)); got != tc.want {
			t.Errorf("during(%d, %d) at %d = %v, want %v", tc.from, tc.to, tc.now, got, tc.want)
		}
	}
}

// TestTimeoutAcrossAStallIsInconclusive freezes this process with SIGSTOP while a probe
// waits for a POP that has not answered yet: a frozen VM, or a process starved of CPU.
// When it runs again the probe has timed out, but that measured the prober, not the POP:
// it is counted as inconclusive and neither recorded nor counted towards a drain.
func TestTimeoutAcrossAStallIsInconclusive(t *testing.T) {
	kill, err := exec.LookPath("kill")
	if err != nil {
		t.Skip("no kill command to stop and continue this process: ", err)
	}
	var hang sync.Mutex // held: the POP does not answer
	hung := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hang.TryLock() {
			hung <- struct{}{}
			hang.Lock()
		}
		hang.Unlock()
		fmt.Fprintln(w, "ok")
	}))
	defer srv.Close()
	inv := &inventory.Inventory{
		Sites: []inventory.Site{{Name: "lab"}, {Name: "edge"}},
		POPs:  []inventory.POP{{Name: "p", Site: "edge", HealthURL: srv.URL + "/healthz"}},
	}
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	cfg.Vantages, cfg.Interval, cfg.Timeout, cfg.ICMP = Vantages{{Site: "lab"}}, 100*time.Millisecond, 2*time.Second, false
	p, out := startProber(t, cfg, inventory.Static(inv))
	wait.Until(t, 10*time.Second, "a successful probe", func() bool { return out.find(func(r *pipeline.Probe) bool { return r.Success }) != nil })

	hang.Lock()
	<-hung // a probe waits for the POP
	// 3 s stopped: the probe's 2 s timeout passes while the process is frozen.
	stop := exec.Command("sh", "-c", fmt.Sprintf("%[1]s -STOP %[2]d; sleep 3; %[1]s -CONT %[2]d", kill, os.Getpid()))
	if err := stop.Run(); err != nil {
		t.Fatalf("stopping this process: %v", err)
	}
	hang.Unlock()
	inconclusive := p.probes.WithLabelValues("lab", "http", "inconclusive")
	wait.Until(t, 10*time.Second, "the probe across the stall counted inconclusive", func() bool { return testutil.ToFloat64(inconclusive) >= 1 })
	wait.Until(t, 10*time.Second, "the stall counted", func() bool { return testutil.ToFloat64(p.stallsSeen) >= 1 })
	if f := out.find(func(r *pipeline.Probe) bool { return !r.Success }); f != nil {
		t.Errorf("a failure was recorded across the stall: %+v", f)
	}
	if c := p.Matrix().Cells(time.Time{}); len(c) != 1 || c[0].Failures != 0 {
		t.Errorf("matrix cells %+v, want one with no failures", c)
	}
}

// TestStallsExcuseOnlyThreeTimeoutsInARow: a POP that stopped answering while the prober
// keeps stalling is still judged: after maxExcused inconclusive probes, a timeout counts.
func TestStallsExcuseOnlyThreeTimeoutsInARow(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	inv := &inventory.Inventory{
		Sites: []inventory.Site{{Name: "lab"}, {Name: "edge"}},
		POPs:  []inventory.POP{{Name: "p", Site: "edge", HealthURL: srv.URL + "/healthz"}},
	}
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	cfg.Vantages, cfg.Interval, cfg.FastInterval, cfg.Timeout, cfg.ICMP = Vantages{{Site: "lab"}}, 50*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond, false
	p, out := startProber(t, cfg, inventory.Static(inv), alwaysStalled)
	wait.Until(t, 10*time.Second, "two recorded failures", func() bool { return out.len() >= 2 })
	services.StopAndAwaitTerminated(context.Background(), p)
	n := out.len()
	inconclusive := testutil.ToFloat64(p.probes.WithLabelValues("lab", "http", "inconclusive"))
	// Each recorded failure follows maxExcused inconclusive probes; the run may stop within the next group.
	if lo, hi := float64(n*maxExcused), float64((n+1)*maxExcused); inconclusive < lo || inconclusive > hi {
		t.Errorf("%d failures recorded after %v inconclusive probes, want %v..%v", n, inconclusive, lo, hi)
	}
}

// TestRefusedIsNeverExcused: a refused connection is the POP's answer, however late the
// prober runs; only timeouts and round trips measure the prober.
func TestRefusedIsNeverExcused(t *testing.T) {
	inv := &inventory.Inventory{
		Sites: []inventory.Site{{Name: "lab"}, {Name: "edge"}},
		POPs:  []inventory.POP{{Name: "p", Site: "edge", TCPAddr: closedPort(t)}},
	}
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	cfg.Vantages, cfg.Interval, cfg.ICMP = Vantages{{Site: "lab"}}, 50*time.Millisecond, false
	p, out := startProber(t, cfg, inventory.Static(inv), alwaysStalled)
	wait.Until(t, 10*time.Second, "three refused probes recorded", func() bool { return out.len() >= 3 })
	if n := testutil.ToFloat64(p.probes.WithLabelValues("lab", "tcp", "inconclusive")); n != 0 {
		t.Errorf("%v refused probes excused as inconclusive", n)
	}
}

// TestProbesFollowInventory: a POP added to the running inventory is probed, without a
// restart, within its first jittered interval; a node added changes no probe.
func TestProbesFollowInventory(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(ok.Close)
	world := inventory.Inventory{Sites: []inventory.Site{{Name: "lab"}}}
	inv := inventory.Static(&world)
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	cfg.Vantages, cfg.Interval = Vantages{{Site: "lab"}}, 200*time.Millisecond
	_, out := startProber(t, cfg, inv)
	world.POPs = []inventory.POP{{Name: "late", Site: "lab", VIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, HealthURL: ok.URL}}
	start := time.Now()
	if err := inv.Set(inventory.SourceYAML, world); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the new POP probed", func() bool {
		return out.find(func(r *pipeline.Probe) bool { return r.POP == "late" && r.Success }) != nil
	})
	t.Logf("new POP probed %v after the inventory change", time.Since(start).Round(time.Millisecond))
	old := inv.Snapshot()
	world.Nodes = []inventory.Node{{Name: "n1", Site: "lab"}}
	if err := inv.Set(inventory.SourceYAML, world); err != nil {
		t.Fatal(err)
	}
	if !sameTargets(old, inv.Snapshot()) {
		t.Fatal("a node added changed the probes")
	}
}
