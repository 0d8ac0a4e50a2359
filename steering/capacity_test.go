package steering

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// closedLoop is a LoadSource whose loads follow the engine's own weights, as clients
// would: each POP carries, for every service and client region, the region's demand
// times the region's weight share at that POP, with the weights of the previous tick.
type closedLoop struct {
	e      *Engine
	now    func() time.Time
	demand map[groupKey]float64 // new sessions per second
	noise  func() float64       // a factor on each load; nil: exact
}

func (c *closedLoop) rates() map[string]float64 {
	sums := map[groupKey]float64{}
	ws := c.e.Weights().Entries
	for _, w := range ws {
		sums[groupKey{w.Service, w.Region}] += w.Weight
	}
	out := map[string]float64{}
	for _, p := range c.e.inv.POPs {
		out[p.Name] = 0
	}
	for _, w := range ws {
		if s := sums[groupKey{w.Service, w.Region}]; s > 0 {
			out[w.POP] += c.demand[groupKey{w.Service, w.Region}] * w.Weight / s
		}
	}
	return out
}

func (c *closedLoop) Load() []POPLoad {
	var out []POPLoad
	rates := c.rates()
	for _, p := range c.e.inv.POPs { // in order: the noise's draws go to the same POPs every run
		r := rates[p.Name]
		if c.noise != nil {
			r *= c.noise()
		}
		out = append(out, POPLoad{POP: p.Name, Rate: r, Seen: c.now()})
	}
	return out
}

// The capacity world: three POPs of 1000 new sessions per second in Paris ("west"),
// Frankfurt ("central") and Warsaw ("east"), each nearest to one region.
func capacityInventory() *inventory.Inventory {
	inv := &inventory.Inventory{
		Sites: []inventory.Site{
			{Name: "paris", Lat: 48.86, Lon: 2.35}, {Name: "frankfurt", Lat: 50.11, Lon: 8.68},
			{Name: "warsaw", Lat: 52.23, Lon: 21.01}, {Name: "zurich", Lat: 47.37, Lon: 8.54},
		},
		POPs: []inventory.POP{
			{Name: "west", Site: "paris", VIPs: []netip.Addr{netip.MustParseAddr("127.0.2.1")}, Capacity: inventory.Capacity{SessionsPerSecond: 1000}},
			{Name: "central", Site: "frankfurt", VIPs: []netip.Addr{netip.MustParseAddr("127.0.2.2")}, Capacity: inventory.Capacity{SessionsPerSecond: 1000}},
			{Name: "east", Site: "warsaw", VIPs: []netip.Addr{netip.MustParseAddr("127.0.2.3")}, Capacity: inventory.Capacity{SessionsPerSecond: 1000}},
		},
		Services: []inventory.Service{{Name: service, POPs: []string{"west", "central", "east"}}},
		ClientRegions: []inventory.ClientRegion{
			{Name: "france", Vantage: "paris"},
			{Name: "germany", Vantage: "frankfurt"},
			{Name: "poland", Vantage: "warsaw"},
		},
	}
	if err := inv.Validate(); err != nil {
		panic(err)
	}
	return inv
}

// capHarness drives the engine over the capacity world on a fake clock, one tick a
// second, every vantage probing every POP (failing the ones in down), the loads closing
// the loop.
type capHarness struct {
	*harness
	loop *closedLoop
	down map[string]bool
}

func newCapHarness(t *testing.T, inv *inventory.Inventory, demand map[string]float64) *capHarness {
	t.Helper()
	h := &capHarness{harness: &harness{t: t, rec: &recorder{}, al: &firing{}, now: time.Now().Round(0)}, down: map[string]bool{}}
	e, err := newEngine(testConfig(t), inv, h.rec, h.al, discard(), newTestRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.now = func() time.Time { return h.now }
	h.e = e
	h.loop = &closedLoop{e: e, now: func() time.Time { return h.now }, demand: map[groupKey]float64{}}
	for r, d := range demand {
		h.loop.demand[groupKey{service, r}] = d
	}
	e.load = h.loop
	return h
}

// run ticks for d, every vantage probing every POP with an RTT of 1 ms per 100 km.
func (h *capHarness) run(d time.Duration) {
	h.advance(d, func() {
		for _, v := range h.e.inv.Sites {
			for _, p := range h.e.inv.POPs {
				ps, _ := h.e.inv.Site(p.Site)
				rtt := time.Duration((1 + haversineKm(v.Lat, v.Lon, ps.Lat, ps.Lon)/100) * float64(time.Millisecond))
				h.probe(v.Name, p.Name, !h.down[p.Name], rtt)
			}
		}
	})
}

// runWatching ticks for d and returns the highest utilisation each POP reached.
func (h *capHarness) runWatching(d time.Duration) map[string]float64 {
	peak := map[string]float64{}
	for end := h.now.Add(d); h.now.Before(end); {
		h.run(time.Second)
		for p, r := range h.loop.rates() {
			peak[p] = max(peak[p], r/1000)
		}
	}
	return peak
}

func (h *capHarness) decisionsSince(n int, region string) []*pipeline.SteeringDecision {
	var out []*pipeline.SteeringDecision
	for _, d := range h.rec.decisions()[n:] {
		if region == "" || d.ClientRegion == region {
			out = append(out, d)
		}
	}
	return out
}

// The probe-only policy: the capacity world without capacities.
func withoutCapacity(inv *inventory.Inventory) *inventory.Inventory {
	for i := range inv.POPs {
		inv.POPs[i].Capacity = inventory.Capacity{}
	}
	return inv
}

func utilisations(m map[string]float64) string {
	var parts []string
	for _, p := range []string{"west", "central", "east"} {
		parts = append(parts, fmt.Sprintf("%s %.2f", p, m[p]))
	}
	return strings.Join(parts, ", ")
}

// TestCapacityCascade: France 600, Germany 500, Poland 300 new sessions per second, each
// nearest to its own POP of 1000. Frankfurt fails. Germany's next best by distance is
// Paris: with the probe-only policy Paris takes 1100/s, above its high watermark (0.9);
// with capacity-aware weights the load spreads and every POP stays under it.
func TestCapacityCascade(t *testing.T) {
	demand := map[string]float64{"france": 600, "germany": 500, "poland": 300}
	high := testConfig(t).Shed.High

	probeOnly := newCapHarness(t, withoutCapacity(capacityInventory()), demand)
	probeOnly.run(2 * time.Minute)
	probeOnly.down["central"] = true
	peakProbe := probeOnly.runWatching(3 * time.Minute)
	t.Logf("probe-only policy, central failed: peak utilisation %s", utilisations(peakProbe))
	if peakProbe["west"] <= high {
		t.Fatalf("probe-only: west peaked at %.2f, want above the high watermark %.2f (the cascade this test guards against)", peakProbe["west"], high)
	}

	h := newCapHarness(t, capacityInventory(), demand)
	calm := h.runWatching(2 * time.Minute)
	if n := len(h.decisionsSince(0, "")); n == 0 {
		t.Fatal("no first decisions")
	}
	for _, d := range h.rec.decisions() {
		if d.Cause == CauseCapacity {
			t.Fatalf("calm world below the low watermark shaped a weight: %+v", d)
		}
	}
	for _, r := range []string{"france", "germany", "poland"} {
		g := h.group(r)
		if math.Abs(g.demand-demand[r]) > 1 {
			t.Fatalf("%s's demand estimated at %.1f/s, want %.0f", r, g.demand, demand[r])
		}
	}
	h.down["central"] = true
	transient := h.runWatching(30 * time.Second)
	steady := h.runWatching(3 * time.Minute)
	t.Logf("capacity-aware, calm: %s; central failed, first 30 s: peak %s; then 3 min: peak %s; weights france %v germany %v; regret france %.1f ms, germany %.1f ms",
		utilisations(calm), utilisations(transient), utilisations(steady), h.weights("france"), h.weights("germany"), h.group("france").regret, h.group("germany").regret)
	for p, u := range steady {
		if u > high {
			t.Errorf("capacity-aware: %s peaked at %.3f, above the high watermark %.2f", p, u, high)
		}
	}
	for p, u := range transient {
		if u > high {
			t.Errorf("capacity-aware: %s peaked at %.3f within 30 s of the failure, above the high watermark %.2f", p, u, high)
		}
	}
	var capDecision *pipeline.SteeringDecision
	for _, d := range h.rec.decisions() {
		if d.Cause == CauseCapacity && d.POP == "east" && d.NewWeight > 0 {
			capDecision = d
		}
	}
	if capDecision == nil || capDecision.Utilisation < 0 || capDecision.Headroom <= 0 || !strings.Contains(capDecision.Reason, "spread by headroom") {
		t.Fatalf("capacity decision moving load to east: %+v; want utilisation, headroom and a reason naming the spread", capDecision)
	}

	// Frankfurt heals: after the hold and the ramps every region is back on its own POP,
	// and nothing is shaped any more.
	h.down["central"] = false
	h.run(3 * time.Minute)
	for r, want := range map[string]string{"france": "west", "germany": "central", "poland": "east"} {
		w := h.weights(r)
		for p, x := range w {
			if (p == want) != (x > 0) {
				t.Errorf("after the heal %s's weights are %v, want %s only", r, w, want)
				break
			}
		}
	}
}

func (h *capHarness) group(region string) *group {
	for _, g := range h.e.groups {
		if g.region.Name == region {
			return g
		}
	}
	h.t.Fatalf("no group for %s", region)
	return nil
}

// TestCapacityShedBetweenWatermarks: France alone on Paris, with Warsaw empty. Below the
// low watermark nothing changes; between and above, Paris keeps the fraction NS1's rule
// gives at the utilisation it ends up with, and the rest goes to Warsaw.
func TestCapacityShedBetweenWatermarks(t *testing.T) {
	cfg := testConfig(t)
	for _, tc := range []struct {
		demand float64
		keep   float64 // Paris's share of France
	}{
		{600, 1},
		{700, 1},
		{800, 4.5 / 5},    // (1 + a·low) / (1 + a·rho), a = 1/(0.9-0.7) = 5
		{1000, 4.5 / 6},   // utilisation 0.75
		{1500, 4.5 / 8.5}, // 0.79
	} {
		t.Run(fmt.Sprint(tc.demand), func(t *testing.T) {
			inv := capacityInventory()
			inv.ClientRegions[0].AllowedPOPs = []string{"west", "east"}
			h := newCapHarness(t, inv, map[string]float64{"france": tc.demand})
			h.run(3 * time.Minute)
			w := h.weights("france")
			share := w["west"] / (w["west"] + w["east"])
			if math.Abs(share-tc.keep) > capacityDeadband {
				t.Fatalf("france's share at west %.3f (weights %v), want %.3f", share, w, tc.keep)
			}
			u := h.loop.rates()["west"] / 1000
			if tc.keep < 1 && (u < cfg.Shed.Low-capacityDeadband || u > cfg.Shed.High) {
				t.Fatalf("west at %.3f of capacity, want it between the watermarks", u)
			}
			d := h.lastDecision("france", "west")
			if tc.keep == 1 {
				if d.Cause == CauseCapacity {
					t.Fatalf("below the low watermark: %+v", d)
				}
				return
			}
			if d.Cause != CauseCapacity || !strings.Contains(d.Reason, "shedding: west") || d.Utilisation <= 0 {
				t.Fatalf("west's decision %+v, want cause capacity, its utilisation, a shedding reason", d)
			}
			if got := testutil.ToFloat64(h.e.utilG.WithLabelValues("west")); math.Abs(got-u) > 0.01 {
				t.Fatalf("meridian_steering_pop_utilisation_ratio{pop=west} = %v, want about %v", got, u)
			}
		})
	}
}

// TestCapacitySpreadByHeadroom: Germany's POP is drained; Paris (France's, half full) and
// Warsaw (empty) take it in proportion to their headroom under the high watermark, not
// all to the nearer Paris.
func TestCapacitySpreadByHeadroom(t *testing.T) {
	h := newCapHarness(t, capacityInventory(), map[string]float64{"france": 400, "germany": 800})
	h.run(2 * time.Minute)
	if _, err := h.e.overrides.add(Override{Action: "drain", POP: "central", Reason: "maintenance"}); err != nil {
		t.Fatal(err)
	}
	h.run(2 * time.Minute)
	// West: France's 400 + Germany's 800 = 1.2 of capacity: it keeps (1+3.5)/(1+6) of
	// them (771/s) and spreads 429/s into east's headroom of 900.
	loads := h.loop.rates()
	w := h.weights("germany")
	t.Logf("germany's weights %v, loads %v", w, loads)
	if w["east"] == 0 || w["west"] == 0 {
		t.Fatalf("germany's weights %v: want it spread over west and east", w)
	}
	for p, l := range loads {
		if l > 900 {
			t.Fatalf("%s at %.0f/s, above its high watermark", p, l)
		}
	}
	if loads["east"] < 300 {
		t.Fatalf("east carries %.0f/s: the spread left most of germany on west", loads["east"])
	}
}

// withSwitzerland adds a region that may only be served from Frankfurt (residency).
func withSwitzerland(inv *inventory.Inventory) *inventory.Inventory {
	inv.ClientRegions = append(inv.ClientRegions, inventory.ClientRegion{Name: "switzerland", Vantage: "zurich", AllowedPOPs: []string{"central"}})
	return inv
}

// TestCapacityNoSpreadIntoTicketedPOP: a POP under a ticket-severity SLO burn takes none
// of what others shed, though it has headroom.
func TestCapacityNoSpreadIntoTicketedPOP(t *testing.T) {
	h := newCapHarness(t, capacityInventory(), map[string]float64{"france": 400, "germany": 800})
	h.run(2 * time.Minute)
	h.al.set(alerts.Alert{Name: "PopLatency", Severity: alerts.SeverityTicket, Labels: map[string]string{"pop": "east"}})
	if _, err := h.e.overrides.add(Override{Action: "drain", POP: "central"}); err != nil {
		t.Fatal(err)
	}
	h.run(2 * time.Minute)
	if w := h.weights("germany"); w["east"] != 0 || w["west"] == 0 {
		t.Fatalf("germany's weights %v: want none on the ticketed east", w)
	}
}

// TestCapacityResidencyKeepsFullPOP: Switzerland may only use Frankfurt. Frankfurt is over
// its high watermark; Germany's share moves away, Switzerland keeps Frankfurt whole, and
// with Frankfurt down Switzerland still gets it (fail-open), not another POP.
func TestCapacityResidencyKeepsFullPOP(t *testing.T) {
	h := newCapHarness(t, withSwitzerland(capacityInventory()), map[string]float64{"germany": 400, "switzerland": 900})
	h.run(3 * time.Minute)
	if w := h.weights("switzerland"); w["central"] != 1 || len(w) != 1 {
		t.Fatalf("switzerland's weights %v, want central 1 only", w)
	}
	for _, w := range h.e.Weights().Entries {
		if w.Region == "switzerland" && (w.Cause != CauseCapacity || !strings.Contains(w.Reason, "stays: no other allowed POP has headroom")) {
			t.Fatalf("switzerland's weight %+v: want its reason to say the shed stays", w)
		}
	}
	if w := h.weights("germany"); w["central"] >= 1 || w["west"]+w["east"] == 0 {
		t.Fatalf("germany's weights %v: want it shed from the full central", w)
	}
	h.down["central"] = true
	h.run(time.Minute)
	if got := h.answers("switzerland"); !slices.Equal(got, []string{"central"}) {
		t.Fatalf("switzerland served by %v with central down, want [central] (fail-open within residency)", got)
	}
	if d := h.lastDecision("switzerland", "central"); d != nil && d.Cause == CauseCapacity {
		t.Fatalf("a fail-open was shaped: %+v", d)
	}
}

// TestCapacityNoFlapAtSteadyLoad: loads jitter by ±5% around a steady demand that keeps
// Paris shedding; after it settles, 30 minutes make no weight change.
func TestCapacityNoFlapAtSteadyLoad(t *testing.T) {
	for _, demand := range []float64{700, 850, 1100, 1600} {
		t.Run(fmt.Sprint(demand), func(t *testing.T) {
			h := newCapHarness(t, capacityInventory(), map[string]float64{"france": demand, "germany": 300, "poland": 200})
			rnd := rand.New(rand.NewPCG(3, 4))
			h.loop.noise = func() float64 { return 1 + 0.05*(2*rnd.Float64()-1) }
			h.run(5 * time.Minute)
			n := len(h.rec.decisions())
			settled := h.weights("france")
			h.run(30 * time.Minute)
			if moved := h.decisionsSince(n, ""); len(moved) > 0 {
				t.Fatalf("steady load moved weights %d times (settled at %v), first %+v", len(moved), settled, moved[0])
			}
		})
	}
}

// TestCapacityStaleLoadIgnored: a load older than shed.stale is no load: nothing is shed
// and decisions record the utilisation as unknown (-1). Loads naming unknown POPs or with
// bad rates are counted and ignored.
func TestCapacityStaleLoadIgnored(t *testing.T) {
	h := newCapHarness(t, capacityInventory(), nil)
	seen := h.now
	h.e.load = LoadFunc(func() []POPLoad {
		return []POPLoad{{POP: "west", Rate: 2000, Seen: seen}, {POP: "atlantis", Rate: 1, Seen: h.now}, {POP: "east", Rate: math.NaN(), Seen: h.now}}
	})
	h.run(h.e.cfg.Shed.Stale + 2*time.Minute)
	if w := h.weights("france"); w["west"] != 1 {
		t.Fatalf("france's weights %v from a stale load, want west 1", w)
	}
	if testutil.ToFloat64(h.e.loadIgnored.WithLabelValues("unknown_pop")) == 0 || testutil.ToFloat64(h.e.loadIgnored.WithLabelValues("invalid")) == 0 {
		t.Fatal("ignored loads not counted")
	}
	if n := testutil.CollectAndCount(h.e.utilG); n != 0 {
		t.Fatalf("%d utilisation series for stale loads, want none", n)
	}
	h.e.overrides.add(Override{Action: "drain", POP: "west"})
	h.run(2 * time.Second)
	if d := h.lastDecision("france", "west"); d == nil || d.Utilisation != -1 || d.Headroom != 0 {
		t.Fatalf("decision %+v, want utilisation -1 and headroom 0 (unknown)", d)
	}
}

// TestCapacityReplayEqualsLive: the loads are recorded with each tick's inputs, and a
// replay of the cascade makes exactly the live decisions, capacity ones included.
func TestCapacityReplayEqualsLive(t *testing.T) {
	h := newCapHarness(t, withSwitzerland(capacityInventory()), map[string]float64{"france": 600, "germany": 500, "poland": 300, "switzerland": 100})
	from := h.now
	h.run(2 * time.Minute)
	h.down["central"] = true
	h.run(2 * time.Minute)
	h.down["central"] = false
	h.run(2 * time.Minute)
	h.rec.mu.Lock()
	hist := memHistory{slices.Clone(h.rec.recs)}
	h.rec.mu.Unlock()
	res, err := Replay(context.Background(), hist, testConfig(t), h.e.inv, ReplayOptions{From: from, To: h.now})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Differences) != 0 || len(res.Decisions) != len(res.Live) {
		t.Fatalf("%d replayed, %d live, differences %+v", len(res.Decisions), len(res.Live), res.Differences)
	}
	capacity := 0
	for i, d := range res.Decisions {
		if d != res.Live[i] {
			t.Fatalf("decision %d: replayed %+v, live %+v", i, d, res.Live[i])
		}
		if d.Cause == CauseCapacity {
			capacity++
		}
	}
	if capacity == 0 {
		t.Fatal("the scenario made no capacity decision: the replay was not tested on it")
	}
}

// TestCapacityDemandAfterSettle: after a failover no POP informs the demand estimate for
// shed.settle; the first settled load is one reading like any other, and a noisy one (a
// busy front door's 1 s rate at 60%) moves the estimate by one tick's share of the
// smoothing, not by all the time no POP informed it (which would shed for a demand 40%
// lower: the lab cascade's Paris at 0.78 of the load instead of 0.64).
func TestCapacityDemandAfterSettle(t *testing.T) {
	demand := map[string]float64{"france": 600, "germany": 500, "poland": 300}
	h := newCapHarness(t, capacityInventory(), demand)
	h.run(2 * time.Minute)
	h.down["central"] = true
	settle := h.e.cfg.Shed.Settle
	settled := func() bool { // the next tick's loads of west and east inform the estimate
		next := h.now.Add(time.Second)
		return next.Sub(h.e.popChanged["west"]) >= settle && next.Sub(h.e.popChanged["east"]) >= settle
	}
	h.run(5 * time.Second)
	for end := h.now.Add(3 * time.Minute); !settled(); h.run(time.Second) {
		if h.now.After(end) {
			t.Fatalf("west and east never settled after the failover (changed %s, %s)", h.e.popChanged["west"], h.e.popChanged["east"])
		}
	}
	before := h.group("france").demand + h.group("germany").demand
	h.loop.noise = func() float64 { return 0.6 }
	h.run(time.Second)
	h.loop.noise = nil
	after := h.group("france").demand + h.group("germany").demand
	t.Logf("France and Germany estimated at %.0f/s before the first settled load, %.0f/s after it (60%% of the load)", before, after)
	if math.Abs(before-1100) > 20 {
		t.Fatalf("France and Germany estimated at %.0f/s before the settle ended, want 1100", before)
	}
	if after < 0.95*before {
		t.Fatalf("one noisy reading after the settle moved France and Germany from %.0f/s to %.0f/s; want one tick's share of the %s smoothing", before, after, demandSmoothing)
	}
}
