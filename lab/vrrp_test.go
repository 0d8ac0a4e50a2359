package lab

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/collectors/keepalived"
	"github.com/meridianhq/meridian/pipeline"
)

// Where keepalived cannot run, the stand-in pair writes what Debian's keepalived writes
// (collectors/keepalived's TestRealKeepalivedFailoverAndSplitBrain records the real
// sequence): read by the keepalived collector, its master's stop is a failover to the
// backup with a duration, and its return takes the VIP back.
func TestVRRPStandIn(t *testing.T) {
	dir := t.TempDir()
	nodes := [2]string{"paris-fd-1", "paris-fd-2"}
	p := newStandInPair("VI_paris", [2]string{filepath.Join(dir, "1.fifo"), filepath.Join(dir, "2.fifo")}, vrrpPriorities)
	t.Cleanup(func() { p.Stop(0); p.Stop(1) })
	var mu sync.Mutex
	var trs []*pipeline.VRRPTransition
	c, err := keepalived.New(keepalived.Config{Interval: time.Hour, Nodes: []keepalived.Node{{POP: "paris", Node: nodes[0], FIFO: p.FIFO(0)}, {POP: "paris", Node: nodes[1], FIFO: p.FIFO(1)}}},
		keepalived.Deps{Appender: pipeline.AppenderFunc(func(_ context.Context, recs ...pipeline.Record) error {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				trs = append(trs, r.(*pipeline.VRRPTransition))
			}
			return nil
		}), Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), c) })
	// seq is each node's transitions as the collector recorded them.
	seq := func(node string) []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, tr := range trs {
			if tr.M.Node == node {
				out = append(out, tr.From+">"+tr.To)
			}
		}
		return out
	}
	wait := func(what string, ok func() bool) {
		t.Helper()
		if err := waitUntil(context.Background(), 20*time.Second, ok); err != nil {
			t.Fatalf("%s: %v; recorded %v and %v", what, err, seq(nodes[0]), seq(nodes[1]))
		}
	}
	is := func(node string, want ...string) func() bool {
		return func() bool { return slices.Equal(seq(node), want) }
	}
	if err := p.Start(0); err != nil {
		t.Fatal(err)
	}
	wait("paris-fd-1 MASTER", func() bool { return p.HoldsVIP(0) })
	if err := p.Start(1); err != nil {
		t.Fatal(err)
	}
	wait("fd-1 BACKUP then MASTER, fd-2 BACKUP", func() bool {
		return is(nodes[0], "UNKNOWN>BACKUP", "BACKUP>MASTER")() && is(nodes[1], "UNKNOWN>BACKUP")()
	})

	p.Stop(0)
	wait("fd-1 STOP and gone, fd-2 MASTER", func() bool {
		return is(nodes[0], "UNKNOWN>BACKUP", "BACKUP>MASTER", "MASTER>STOP", "STOP>UNKNOWN")() && is(nodes[1], "UNKNOWN>BACKUP", "BACKUP>MASTER")()
	})
	mu.Lock()
	fo := trs[slices.IndexFunc(trs, func(tr *pipeline.VRRPTransition) bool { return tr.Failover })]
	mu.Unlock()
	if fo.M.Node != nodes[1] || fo.PreviousMaster != nodes[0] || fo.Duration <= 0 || fo.Duration > 5*time.Second {
		t.Errorf("failover %+v, want paris-fd-1 -> paris-fd-2 within 5 s", fo)
	}
	t.Logf("stand-in failover: %s without a holder (the backup's skew time, 0.61 s, as real keepalived's 0.63 s)", fo.Duration)

	if err := p.Start(0); err != nil {
		t.Fatal(err)
	}
	wait("fd-1 back as MASTER, fd-2 BACKUP", func() bool {
		return is(nodes[0], "UNKNOWN>BACKUP", "BACKUP>MASTER", "MASTER>STOP", "STOP>UNKNOWN", "UNKNOWN>BACKUP", "BACKUP>MASTER")() &&
			is(nodes[1], "UNKNOWN>BACKUP", "BACKUP>MASTER", "MASTER>BACKUP")()
	})
}
