package shard

import (
	"context"
	"flag"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
)

const heartbeatTimeout = 2 * time.Second

// member starts a replica named id gossiping on a free 127.0.0.1 port, joining join.
func member(t *testing.T, id string, join ...string) (*Ring, string) {
	t.Helper()
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet(id, flag.PanicOnError))
	cfg.Enabled, cfg.InstanceID = true, id
	cfg.HeartbeatPeriod, cfg.HeartbeatTimeout = 100*time.Millisecond, heartbeatTimeout
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
	r, err := New(cfg, log.NewNopLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), r) })
	return r, fmt.Sprintf("127.0.0.1:%d", port)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTargetsSplitAndMove runs two replicas over real memberlist gossip on loopback:
// every target has exactly one owner and each replica has some; when one stops, the
// other owns them all.
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
	waitFor(t, "both replicas in both views of the ring", func() bool {
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
	waitFor(t, "a to own every target once b left", func() bool { return owned(a) == len(targets) })
}

// TestDeadReplicaIsForgotten stops a replica without taking it out of the ring, so its
// entry stays with its heartbeat stopped, as a crashed replica's would: until the others
// forget it (two heartbeat timeouts) its targets have no owner, then one takes them all.
func TestDeadReplicaIsForgotten(t *testing.T) {
	a, seed := member(t, "a")
	b, _ := member(t, "b", seed)
	waitFor(t, "both replicas in both views of the ring", func() bool {
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
	waitFor(t, "a to own the dead replica's target", func() bool { return a.Owns(orphan) })
	if took := time.Since(died); took < forgetAfter*heartbeatTimeout {
		t.Errorf("%s moved after %v, before two heartbeat timeouts", orphan, took)
	}
	if a.ring.InstancesCount() != 1 {
		t.Errorf("ring still has %d instances", a.ring.InstancesCount())
	}
}
