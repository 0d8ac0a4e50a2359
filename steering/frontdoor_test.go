package steering

import (
	"math"
	"testing"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

func haproxyStat(at time.Time, pop, node, proxy, typ string, util float64) *pipeline.HAProxyStat {
	return &pipeline.HAProxyStat{M: pipeline.Meta{Time: at, Node: node}, POP: pop, Proxy: proxy, Type: typ, Utilisation: util}
}

// A POP's load is the sum of its nodes' latest counted frontends as equivalent sessions
// per second; backends, stale frontends, late records and POPs without a capacity do not
// count.
func TestFrontDoorLoads(t *testing.T) {
	now := time.Now().Round(0)
	f := newFrontDoor()
	capacity := map[string]float64{"west": 1000, "central": 2000}
	for _, r := range []*pipeline.HAProxyStat{
		haproxyStat(now.Add(-2*time.Second), "west", "w1", "api", "frontend", 0.5),
		haproxyStat(now.Add(-time.Second), "west", "w1", "api", "frontend", 0.3),    // newer: replaces 0.5
		haproxyStat(now.Add(-3*time.Second), "west", "w1", "api", "frontend", 0.9),  // late: ignored
		haproxyStat(now.Add(-time.Second), "west", "w2", "api", "frontend", 0.1),    // the other node: summed
		haproxyStat(now, "west", "w2", "stats", "frontend", 0),                      // the exporter's: counts nothing
		haproxyStat(now, "west", "w1", "api", "backend", 0.7),                       // not a load
		haproxyStat(now.Add(-time.Minute), "central", "c1", "api", "frontend", 0.8), // stale
		haproxyStat(now, "east", "e1", "api", "frontend", 0.4),                      // no capacity
	} {
		f.observe(r)
	}
	got := f.loads(now, 30*time.Second, func(p string) float64 { return capacity[p] })
	if len(got) != 1 || got[0].POP != "west" || math.Abs(got[0].Rate-400) > 1e-9 || !got[0].Seen.Equal(now) {
		t.Fatalf("loads = %+v, want only west at 400/s seen now", got)
	}
	if _, ok := f.latest[frontendKey{"central", "c1", "api"}]; ok {
		t.Fatal("a stale frontend is kept")
	}
}

// HAProxy records consumed by the engine (its default load source) drive capacity
// steering: the capacity cascade of TestCapacityCascade with the loads reported as two
// HAProxy nodes' frontend utilisations instead of given as POP loads. Frankfurt fails,
// every POP stays under the high watermark, and capacity decisions record the
// utilisation the records carried.
func TestFrontDoorRecordsSteer(t *testing.T) {
	demand := map[string]float64{"france": 600, "germany": 500, "poland": 300}
	h := newCapHarness(t, capacityInventory(), demand)
	h.e.load = LoadFunc(h.e.frontDoorLoad)
	report := func() {
		for pop, rate := range h.loop.rates() {
			// Two nodes share each POP's traffic; the exporter's frontend counts nothing.
			h.e.Consume([]pipeline.Record{
				haproxyStat(h.now, pop, pop+"-fd-1", "api", "frontend", 0.75*rate/1000),
				haproxyStat(h.now, pop, pop+"-fd-2", "api", "frontend", 0.25*rate/1000),
				haproxyStat(h.now, pop, pop+"-fd-1", "stats", "frontend", 0),
			})
		}
	}
	watch := func(d time.Duration) map[string]float64 {
		peak := map[string]float64{}
		for end := h.now.Add(d); h.now.Before(end); {
			report()
			h.run(time.Second)
			for p, r := range h.loop.rates() {
				peak[p] = max(peak[p], r/1000)
			}
		}
		return peak
	}
	watch(2 * time.Minute)
	for _, d := range h.rec.decisions() {
		if d.Cause == CauseCapacity {
			t.Fatalf("calm world below the low watermark shaped a weight: %+v", d)
		}
	}
	h.down["central"] = true
	peak := watch(3 * time.Minute)
	t.Logf("front door records, central failed: peak %s", utilisations(peak))
	high := testConfig(t).Shed.High
	for p, u := range peak {
		if u > high {
			t.Errorf("%s peaked at %.3f, above the high watermark %.2f", p, u, high)
		}
	}
	shaped := false
	for _, d := range h.rec.decisions() {
		shaped = shaped || (d.Cause == CauseCapacity && d.Utilisation > 0)
	}
	if !shaped {
		t.Fatal("no capacity decision with a measured utilisation: the HAProxy records did not reach steering")
	}
}
