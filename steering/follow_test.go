package steering

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meridianhq/meridian/inventory"
)

// series counts the series of c whose label name has value.
func series(t *testing.T, c prometheus.Collector, name, value string) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 1000)
	c.Collect(ch)
	close(ch)
	n := 0
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		for _, l := range d.GetLabel() {
			if l.GetName() == name && l.GetValue() == value {
				n++
			}
		}
	}
	return n
}

// TestEngineFollowsInventory: a running engine applies inventory changes at its next
// tick. An unrelated change (a node added) leaves weights and holds as they were; a POP
// added to the service and a client region added are answered within a tick; a removed
// POP stops being answered and its series go.
func TestEngineFollowsInventory(t *testing.T) {
	h := newHarness(t)
	inv := testInventory()
	live := inventory.Static(inv)
	h.e.live, h.e.applied = live, live.Snapshot().Version()
	set := func(change func(*inventory.Inventory)) {
		t.Helper()
		// A new world, as a reload reads one: the snapshots in use keep theirs.
		next := *inv
		next.POPs, next.Nodes, next.ClientRegions = slices.Clone(inv.POPs), slices.Clone(inv.Nodes), slices.Clone(inv.ClientRegions)
		next.Services = []inventory.Service{{Name: inv.Services[0].Name, POPs: slices.Clone(inv.Services[0].POPs)}}
		inv = &next
		change(inv)
		if err := inv.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := live.Set(inventory.SourceYAML, *inv); err != nil {
			t.Fatal(err)
		}
	}

	// nbg drained by a probe quorum, then answering again: held for MinHold.
	healthy := func() {
		for _, v := range []string{"paris", "london"} {
			h.probe(v, "nbg", true, 9*time.Millisecond)
			h.probe(v, "nyc", true, 80*time.Millisecond)
		}
	}
	h.advance(2*time.Second, healthy)
	for range 2 {
		h.probe("paris", "nbg", false, 0)
		h.probe("london", "nbg", false, 0)
	}
	h.e.Tick(context.Background())
	h.advance(2*time.Second, healthy)
	if got := h.answers("france"); !slices.Equal(got, []string{"nyc"}) {
		t.Fatalf("france served by %v after nbg's drain, want [nyc]", got)
	}
	before := h.e.Weights().Entries
	decisions := len(h.rec.decisions())

	// A node added: nothing steering decides changes, the hold stands.
	set(func(inv *inventory.Inventory) {
		inv.Nodes = append(inv.Nodes, inventory.Node{Name: "nbg-edge-9", Site: "nuremberg"})
	})
	h.advance(time.Second, healthy)
	if h.e.applied != live.Snapshot().Version() {
		t.Fatalf("engine applied inventory version %d, live is at %d", h.e.applied, live.Snapshot().Version())
	}
	after := h.e.Weights().Entries
	for i := range before {
		before[i].RegretMs, after[i].RegretMs = 0, 0
	}
	if !slices.Equal(before, after) {
		t.Fatalf("a node added changed the weights:\nbefore %+v\nafter  %+v", before, after)
	}
	if n := len(h.rec.decisions()); n != decisions {
		t.Fatalf("a node added made %d decisions", n-decisions)
	}
	if w := h.weights("france"); w["nbg"] != 0 || w["nyc"] != 1 {
		t.Fatalf("france weights %v after an unrelated change, want the hold to stand (nbg 0, nyc 1)", w)
	}

	// A POP in Paris added to the service and a client region whose vantage is Paris:
	// answered at the next tick.
	set(func(inv *inventory.Inventory) {
		inv.POPs = append(inv.POPs, inventory.POP{Name: "par", Site: "paris", VIPs: []netip.Addr{netip.MustParseAddr("127.0.1.5")}})
		inv.Services[0].POPs = append(inv.Services[0].POPs, "par")
		inv.ClientRegions = append(inv.ClientRegions, inventory.ClientRegion{Name: "belgium", Countries: []string{"BE"}, Vantage: "paris"})
	})
	h.advance(time.Second, healthy)
	if got := h.answers("belgium"); !slices.Equal(got, []string{"par"}) {
		t.Fatalf("new region belgium served by %v one tick after it was added, want [par]", got)
	}
	if got := h.answers(DefaultRegion); !slices.Contains(got, "par") {
		t.Fatalf("default region served by %v, want the new POP among them", got)
	}
	if got := h.answers("france"); !slices.Equal(got, []string{"nyc"}) {
		t.Fatalf("france (residency nbg, nyc) served by %v after par was added, want [nyc]", got)
	}

	// lon removed: the UK moves off it at the next tick; its weights and series go.
	if got := h.answers("uk"); !slices.Equal(got, []string{"lon"}) {
		t.Fatalf("uk served by %v, want [lon]", got)
	}
	if series(t, h.e.weight, "pop", "lon") == 0 {
		t.Fatal("no meridian_steering_weight series for lon before its removal")
	}
	set(func(inv *inventory.Inventory) {
		inv.POPs = slices.DeleteFunc(inv.POPs, func(p inventory.POP) bool { return p.Name == "lon" })
		inv.Services[0].POPs = slices.DeleteFunc(inv.Services[0].POPs, func(p string) bool { return p == "lon" })
	})
	h.advance(time.Second, healthy)
	if got := h.answers("uk"); len(got) == 0 || slices.Contains(got, "lon") {
		t.Fatalf("uk served by %v after lon was removed", got)
	}
	for _, w := range h.e.Weights().Entries {
		if w.POP == "lon" {
			t.Fatalf("weight of removed POP lon still kept: %+v", w)
		}
	}
	for _, c := range []prometheus.Collector{h.e.weight, h.e.popDown} {
		if n := series(t, c, "pop", "lon"); n != 0 {
			t.Fatalf("%d series of %T for removed POP lon remain", n, c)
		}
	}
	// The hold survived every change: nbg comes back only after MinHold.
	if w := h.weights("france"); w["nbg"] != 0 {
		t.Fatalf("nbg restored to %v within its hold, across inventory changes", w["nbg"])
	}
}
