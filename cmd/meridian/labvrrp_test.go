package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/wait"
)

// `meridian lab fail vrrp paris` stops the keepalived holding Paris's VIP in the lab: the
// backup takes it, the keepalived module records the failover with how long the VIP had
// no holder, and the map's Paris diamond shows the new holder; `lab heal` restarts the
// stopped node, which takes the VIP back. Real keepalived pairs where root and Debian's
// package allow, the lab's stand-ins otherwise. -short skips.
func TestLabVRRPFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the lab and every module")
	}
	ctx, cfg, l, logger := labSetup(t, "labvrrp", "-keepalived.interval=500ms")
	a := newApp(cfg, logger)
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serveApp(actx, a) }()
	t.Cleanup(func() { stop(); <-done })
	base := "http://" + cfg.Server.ListenAddress
	if err := waitReady(ctx, base, 2*time.Minute, done); err != nil {
		t.Fatal(err)
	}
	nodes := l.Endpoints().VRRP
	if len(nodes) != 2*len(cfg.Inventory.POPs) {
		t.Fatalf("%d keepalived nodes for %d POPs, want a pair each", len(nodes), len(cfg.Inventory.POPs))
	}
	if len(cfg.Keepalived.Nodes) != len(nodes) {
		t.Fatalf("the keepalived module follows %d nodes of the lab's %d", len(cfg.Keepalived.Nodes), len(nodes))
	}
	t.Logf("real keepalived: %v", nodes[0].Keepalived)
	parisAttr := func(name string) string {
		var snap struct {
			Nodes []struct {
				ID    string            `json:"id"`
				Attrs map[string]string `json:"attrs"`
			} `json:"nodes"`
		}
		getJSON(t, base+"/map/api/snapshot", labToken, &snap)
		for _, n := range snap.Nodes {
			if n.ID == "pop:paris" {
				return n.Attrs[name]
			}
		}
		return ""
	}
	// parisShows holds when the map's Paris diamond shows holder holding the VIP (and, if
	// set, the pair's states vrrp); it names what the map shows while it does not.
	parisShows := func(holder, vrrp string) func() error {
		return func() error {
			h, v := parisAttr("vip_holder"), parisAttr("vrrp")
			if h == holder && (vrrp == "" || v == vrrp) {
				return nil
			}
			return fmt.Errorf("the map shows vip_holder %q, vrrp %q", h, v)
		}
	}
	wait.For(t, time.Minute, "the map showing paris-fd-1 holding Paris's VIP, paris-fd-2 its backup", parisShows("paris-fd-1", "paris-fd-1 MASTER, paris-fd-2 BACKUP"))
	lab := func(args ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append([]string{args[0], "-lab.address=" + l.Endpoints().Control, "-server.token-file=" + cfg.Server.TokenFile}, args[1:]...)
		if code := labCommand(args, &out, &errOut); code != 0 {
			t.Fatalf("meridian lab %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
		}
	}

	lab("fail", "vrrp", "paris")
	failed := time.Now()
	query := func(sql string) string {
		out, err := a.store.Query(context.Background(), sql, "TSV")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	var row string
	wait.Until(t, time.Minute, "the failover paris-fd-1 -> paris-fd-2 in vrrp_transitions", func() bool {
		row = query("SELECT previous_master, node, duration_ms FROM labvrrp.vrrp_transitions WHERE pop = 'paris' AND failover")
		return row != ""
	})
	var from, to string
	var ms float64
	if _, err := fmt.Sscan(row, &from, &to, &ms); err != nil || from != "paris-fd-1" || to != "paris-fd-2" || ms <= 0 || ms > 5000 {
		t.Fatalf("failover recorded as %q, want paris-fd-1 -> paris-fd-2 within 5 s", row)
	}
	wait.For(t, 10*time.Second, "the map showing paris-fd-2 holding Paris's VIP", parisShows("paris-fd-2", ""))
	t.Logf("failover paris-fd-1 -> paris-fd-2: the VIP without a holder for %.0f ms (recorded); the map showed the new holder %s after the command", ms, time.Since(failed).Round(100*time.Millisecond))

	lab("heal")
	healed := time.Now()
	wait.For(t, 30*time.Second, "paris-fd-1 back as Paris's VIP holder", parisShows("paris-fd-1", "paris-fd-1 MASTER, paris-fd-2 BACKUP"))
	t.Logf("heal: paris-fd-1 holds the VIP again %s after the command (preemption after the master down interval, 3.4 s)", time.Since(healed).Round(100*time.Millisecond))
	if n := query("SELECT count() FROM labvrrp.vrrp_transitions WHERE pop != 'paris' AND time > now() - 600 AND to_state NOT IN ('BACKUP', 'MASTER', 'FAULT')"); n != "0" {
		t.Errorf("%s transitions to STOP or UNKNOWN at the POPs left alone, want 0", n)
	}
}
