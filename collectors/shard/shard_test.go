package shard

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/internal/wait"
)

const heartbeatTimeout = 3 * time.Second

// member starts a replica named id gossiping on a free 127.0.0.1 port, joining join.
func member(t *testing.T, id string, join ...string) (*Ring, string) {
	t.Helper()
	return memberWith(t, id, func(*Config) {}, join...)
}

// memberWith is member with set applied to its configuration.
func memberWith(t *testing.T, id string, set func(*Config), join ...string) (*Ring, string) {
	t.Helper()
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet(id, flag.PanicOnError))
	cfg.Enabled, cfg.InstanceID = true, id
	set(&cfg)
	cfg.HeartbeatPeriod, cfg.HeartbeatTimeout = 2*time.Second, heartbeatTimeout
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg.Memberlist.TCPTransport.BindAddrs = []string{"127.0.0.1"}
	cfg.Memberlist.TCPTransport.BindPort = port
	cfg.Memberlist.AdvertiseAddr, cfg.Memberlist.AdvertisePort = "127.0.0.1", port
	cfg.Memberlist.JoinMembers = join
	cfg.Memberlist.GossipInterval, cfg.Memberlist.PushPullInterval = 50*time.Millisecond, 500*time.Millisecond
	cfg.Memberlist.LeaveTimeout = time.Second
	r, err := New(cfg, Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), r) })
	return r, fmt.Sprintf("127.0.0.1:%d", port)
}

// TestTargetsSplitAndMove runs two replicas over real memberlist gossip on loopback:
// every target has exactly one owner and each replica has some; when one stops, the
// other owns them all at once (the leaving one's last update is gossiped before its
// memberlist goes).
func TestTargetsSplitAndMove(t *testing.T) {
	a, seed := member(t, "a")
	b, _ := member(t, "b", seed)
	targets := make([]string, 32)
	for i := range targets {
		targets[i] = fmt.Sprintf("relay-%d", i)
	}
	owned := func(r *Ring) (n int) {
		for _, k := range targets {
			if r.Owns(k) {
				n++
			}
		}
		return n
	}
	wait.Until(t, 20*time.Second, "both replicas in both views of the ring", func() bool {
		return a.ring.InstancesWithTokensCount() == 2 && b.ring.InstancesWithTokensCount() == 2
	})
	for _, k := range targets {
		if a.Owns(k) == b.Owns(k) {
			t.Errorf("target %s: owned by a %v, by b %v; want exactly one", k, a.Owns(k), b.Owns(k))
		}
	}
	if na, nb := owned(a), owned(b); na == 0 || nb == 0 {
		t.Errorf("a owns %d, b %d of %d targets: want them spread", na, nb, len(targets))
	}

	if err := services.StopAndAwaitTerminated(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	wait.Until(t, 20*time.Second, "a to own every target once b left", func() bool { return owned(a) == len(targets) })
	if took := time.Since(left); took >= forgetAfter*heartbeatTimeout {
		t.Errorf("a took b's targets %v after b left: it learnt only by forgetting b, not from b's leaving", took)
	}
}

// TestDeadReplicaIsForgotten stops a replica without taking it out of the ring, so its
// entry stays with its heartbeat stopped, as a crashed replica's would: until the others
// forget it (two heartbeat timeouts) its targets have no owner, then one takes them all.
func TestDeadReplicaIsForgotten(t *testing.T) {
	a, seed := member(t, "a")
	b, _ := member(t, "b", seed)
	wait.Until(t, 20*time.Second, "both replicas in both views of the ring", func() bool {
		return a.ring.InstancesWithTokensCount() == 2 && b.ring.InstancesWithTokensCount() == 2
	})
	var orphan string
	for i := 0; orphan == ""; i++ {
		if k := fmt.Sprintf("relay-%d", i); b.Owns(k) {
			orphan = k
		}
	}
	b.lifecycler.SetKeepInstanceInTheRingOnShutdown(true)
	died := time.Now()
	if err := services.StopAndAwaitTerminated(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if a.Owns(orphan) {
		t.Fatalf("%s moved to a at once; a dead replica is only forgotten after two heartbeat timeouts", orphan)
	}
	wait.Until(t, 20*time.Second, "a to own the dead replica's target", func() bool { return a.Owns(orphan) })
	if took := time.Since(died); took < forgetAfter*heartbeatTimeout {
		t.Errorf("%s moved after %v, before two heartbeat timeouts", orphan, took)
	}
	if a.ring.InstancesCount() != 1 {
		t.Errorf("ring still has %d instances", a.ring.InstancesCount())
	}
}

// TestRestartKeepsTargets restarts a replica that keeps its ring entry at shutdown and
// its tokens in a file, as a rolling restart does: while it is away its entry stays
// (LEAVING) and its targets wait, the other replica does not take them; back, it owns the
// same ones, so its collectors resume them from their own resume points.
func TestRestartKeepsTargets(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	keep := func(c *Config) { c.UnregisterOnShutdown, c.TokensFilePath = false, tokens }
	a, seed := member(t, "a")
	b, _ := memberWith(t, "b", keep, seed)
	wait.Until(t, 20*time.Second, "both replicas in both views of the ring", func() bool {
		return a.ring.InstancesWithTokensCount() == 2 && b.ring.InstancesWithTokensCount() == 2
	})
	var mine []string
	for i := range 32 {
		if k := fmt.Sprintf("relay-%d", i); b.Owns(k) {
			mine = append(mine, k)
		}
	}
	if len(mine) == 0 {
		t.Fatal("b owns none of 32 targets")
	}
	before, err := b.ring.GetInstance("b")
	if err != nil {
		t.Fatal(err)
	}
	if saved, err := ring.LoadTokensFromFile(tokens); err != nil || !slices.Equal(saved, ring.Tokens(before.Tokens)) {
		t.Fatalf("tokens file %v (%v), want b's tokens", saved, err)
	}
	if err := services.StopAndAwaitTerminated(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "a to see b leaving, still in the ring", func() bool {
		st, err := a.ring.GetInstanceState("b")
		return err == nil && st == ring.LEAVING
	})
	for _, k := range mine {
		if a.Owns(k) {
			t.Errorf("%s moved to a while b restarts", k)
		}
	}
	b, _ = memberWith(t, "b", keep, seed)
	wait.Until(t, 20*time.Second, "b back with its targets", func() bool {
		for i := range 32 {
			k := fmt.Sprintf("relay-%d", i)
			if b.Owns(k) != slices.Contains(mine, k) || a.Owns(k) == b.Owns(k) {
				return false
			}
		}
		return true
	})
}

// With no bind address configured the gossip listener binds to loopback, not to every
// interface as dskit's own default does (read from the kernel's socket table).
func TestGossipBindsLoopbackByDefault(t *testing.T) {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	cfg.Enabled, cfg.InstanceID = true, "solo"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg.Memberlist.TCPTransport.BindPort = port
	cfg.Memberlist.LeaveTimeout = time.Second
	r, err := New(cfg, Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	defer services.StopAndAwaitTerminated(context.Background(), r)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	// Columns: sl local_address rem_address st ...; 0A is LISTEN, addresses little-endian hex.
	var bound []string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", port)) {
			bound = append(bound, f[1])
		}
	}
	if want := fmt.Sprintf("0100007F:%04X", port); len(bound) != 1 || bound[0] != want {
		t.Fatalf("gossip listeners on port %d: %v, want only %s (127.0.0.1)", port, bound, want)
	}
}
