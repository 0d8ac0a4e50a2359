package steering

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/testlog"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
)

// changeInventory returns a copy of inv changed by change, for live.Set: the snapshots in
// use keep their world.
func changeInventory(inv *inventory.Inventory, change func(*inventory.Inventory)) *inventory.Inventory {
	next := *inv
	next.Services, next.ClientRegions = slices.Clone(inv.Services), slices.Clone(inv.ClientRegions)
	change(&next)
	return &next
}

// TestDNSFollowsInventory runs the module with its GeoDNS on a loopback port and changes
// the live inventory under it, asking with a miekg/dns client as a resolver would (ECS):
// a client region and a service added answer, from the region's nearest POP; a removed
// region's clients get the default region's set; a removed service is NXDOMAIN; a change
// with a bad entry is refused whole, named in the log and counted, and the last good
// table answers until a good change comes. Each change's time to the first answer that
// shows it is logged: the bound is one tick_interval (20 ms here) plus the query.
func TestDNSFollowsInventory(t *testing.T) {
	inv := testInventory()
	live := inventory.Static(inv)
	reg := newTestRegistry()
	var logs testlog.Buffer
	_, addr := startSteeringDeps(t, testConfig(t), Deps{Inventory: inv, Live: live, Appender: &recorder{}, Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	const (
		japan = "203.0.113.0/24" // no country in the test database: the default region before
		gb    = "81.2.69.142/31" // uk
		img   = "img.example.net."
	)
	a := func(r *dns.Msg) string {
		if r == nil || len(r.Answer) == 0 {
			return ""
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	scope := func(r *dns.Msg) int {
		for _, o := range r.IsEdns0().Option {
			if e, ok := o.(*dns.EDNS0_SUBNET); ok {
				return int(e.SourceScope)
			}
		}
		return -1
	}
	var took []time.Duration
	apply := func(what string, change func(*inventory.Inventory), shows func() bool) {
		t.Helper()
		inv = changeInventory(inv, change)
		start := time.Now()
		if err := live.Set(inventory.SourceYAML, *inv); err != nil {
			t.Fatal(err)
		}
		wait.Until(t, 5*time.Second, what, shows)
		took = append(took, time.Since(start))
		t.Logf("%s: answered after %v", what, took[len(took)-1].Round(time.Millisecond))
	}

	if r := ask(t, addr, img, japan); r.Rcode != dns.RcodeNameError {
		t.Fatalf("%s before it is in the inventory: %v, want NXDOMAIN", img, r)
	}
	// A region (by CIDR, its vantage Tokyo) and a service added together.
	apply("japan and img added", func(inv *inventory.Inventory) {
		inv.ClientRegions = append(inv.ClientRegions, inventory.ClientRegion{Name: "japan", CIDRs: []netip.Prefix{netip.MustParsePrefix(japan)}, Vantage: "tokyo"})
		inv.Services = append(inv.Services, inventory.Service{Name: img, POPs: []string{"nbg", "nyc", "tyo"}})
	}, func() bool {
		r := ask(t, addr, img, japan)
		return a(r) == vip["tyo"].String() && scope(r) == 24
	})
	// From then on, only its nearest POP answers the region, for both services.
	for range 20 {
		for _, name := range []string{service, img} {
			if r := ask(t, addr, name, japan); a(r) != vip["tyo"].String() || scope(r) != 24 {
				t.Fatalf("japan asking %s: %v, want tyo %s with ECS scope /24", name, r, vip["tyo"])
			}
		}
	}

	// uk removed: its clients are answered like any unknown client, from every POP of
	// the service (the default region). Until then only London answered them.
	if got := a(ask(t, addr, service, gb)); got != vip["lon"].String() {
		t.Fatalf("uk before its removal: %q, want lon", got)
	}
	seen := map[string]bool{}
	apply("uk removed", func(inv *inventory.Inventory) {
		inv.ClientRegions = slices.DeleteFunc(inv.ClientRegions, func(r inventory.ClientRegion) bool { return r.Name == "uk" })
	}, func() bool {
		seen[a(ask(t, addr, service, gb))] = true
		return seen[vip["nyc"].String()] // a POP no region of GB's but default would get
	})
	wait.Until(t, 5*time.Second, "a former uk client answered by every POP", func() bool {
		seen[a(ask(t, addr, service, gb))] = true
		return len(seen) == 4 && !seen[""]
	})

	apply("img removed", func(inv *inventory.Inventory) {
		inv.Services = inv.Services[:1]
	}, func() bool {
		r := ask(t, addr, img, japan)
		return r != nil && r.Rcode == dns.RcodeNameError && len(r.Ns) == 1
	})

	// A region no client can be located in, beside a good new service: the whole change
	// waits, the last good table answers.
	bad := changeInventory(inv, func(inv *inventory.Inventory) {
		inv.ClientRegions = append(inv.ClientRegions, inventory.ClientRegion{Name: "nowhere", Vantage: "paris"})
		inv.Services = append(inv.Services, inventory.Service{Name: "later.example.net.", POPs: []string{"nbg"}})
	})
	if err := live.Set(inventory.SourceYAML, *bad); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 5*time.Second, "the bad change refused", func() bool {
		return promtest.Sum(t, reg, "meridian_steering_inventory_refused_total", "part", "dns") == 1
	})
	if !strings.Contains(logs.String(), `client region \"nowhere\" has no countries, continents or cidrs`) {
		t.Errorf("the refusal does not name the region; log:\n%s", logs.String())
	}
	if r := ask(t, addr, "later.example.net.", japan); r.Rcode != dns.RcodeNameError {
		t.Errorf("a service of the refused change answers: %v", r)
	}
	if got := a(ask(t, addr, service, japan)); got != vip["tyo"].String() {
		t.Errorf("japan after a refused change: %q, want tyo from the last good table", got)
	}
	// The engine applied the version the DNS refused; the gauge shows the DNS behind.
	if e, d := promtest.Sum(t, reg, "meridian_steering_inventory_version", "part", "engine"), promtest.Sum(t, reg, "meridian_steering_inventory_version", "part", "dns"); e != d+1 {
		t.Errorf("inventory version: engine %v, dns %v, want the dns one behind", e, d)
	}
	apply("the bad region fixed", func(inv *inventory.Inventory) {
		*inv = *bad
		inv.ClientRegions = slices.Clone(bad.ClientRegions)
		inv.ClientRegions[len(inv.ClientRegions)-1].CIDRs = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	}, func() bool { return a(ask(t, addr, "later.example.net.", japan)) == vip["nbg"].String() })
	t.Logf("inventory change to DNS answer: max %v over %d changes (tick_interval %v)", slices.Max(took).Round(time.Millisecond), len(took), testConfig(t).TickInterval)
}
