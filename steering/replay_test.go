package steering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/lab"
	"github.com/meridianhq/meridian/pipeline"
)

// memHistory is a History over the records an engine appended, as storage keeps them:
// decisions at millisecond precision.
type memHistory struct{ recs []pipeline.Record }

func (m memHistory) Inputs(_ context.Context, from, to time.Time) ([]*pipeline.SteeringInputs, error) {
	var out []*pipeline.SteeringInputs
	for _, r := range m.recs {
		if in, ok := r.(*pipeline.SteeringInputs); ok && !in.M.Time.Before(from) && !in.M.Time.After(to) {
			out = append(out, in)
		}
	}
	return out, nil
}

func (m memHistory) Decisions(_ context.Context, from, to time.Time) ([]*pipeline.SteeringDecision, error) {
	var out []*pipeline.SteeringDecision
	for _, r := range m.recs {
		if d, ok := r.(*pipeline.SteeringDecision); ok {
			t := d.M.Time.Truncate(time.Millisecond)
			if !t.Before(from.Truncate(time.Millisecond)) && !t.After(to) {
				c := *d
				c.M.Time = t
				out = append(out, &c)
			}
		}
	}
	return out, nil
}

// labHarness is the engine on a fake clock over the lab's world, each vantage probing
// each POP every tick with the lab's RTT for the pair (exact: the smoothed RTT is the
// lab's RTT), unless the POP is down.
type labHarness struct {
	*harness
	inv  *inventory.Inventory
	down map[string]bool
	tick time.Duration
	// probeTime is the wall time spent making and consuming probes, not ticking
	probeTime time.Duration
}

func newLabHarness(t testing.TB, cfg Config) *labHarness {
	inv := lab.World()
	h := &labHarness{harness: &harness{rec: &recorder{}, al: &firing{}, now: time.Now().Add(-2 * time.Hour).Round(0)}, inv: inv, down: map[string]bool{}, tick: 200 * time.Millisecond}
	e, err := newEngine(cfg, inv, h.rec, h.al, discard(), newTestRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.now = func() time.Time { return h.now }
	h.e = e
	return h
}

func (h *labHarness) run(d time.Duration) {
	for end := h.now.Add(d); h.now.Before(end); h.now = h.now.Add(h.tick) {
		start := time.Now()
		var recs []pipeline.Record
		for _, v := range h.inv.Sites {
			for _, p := range h.inv.POPs {
				recs = append(recs, &pipeline.Probe{M: pipeline.Meta{Time: h.now.Add(-time.Millisecond)}, Vantage: v.Name, Method: "tcp", POP: p.Name,
					Success: !h.down[p.Name], RTT: time.Duration(lab.RTT(h.inv, v.Name, p.Site) * float64(time.Millisecond))})
			}
		}
		h.e.Consume(recs)
		h.probeTime += time.Since(start)
		h.e.Tick(context.Background())
	}
}

func (h *labHarness) history() memHistory {
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	return memHistory{slices.Clone(h.rec.recs)}
}

// scenario: calm, nuremberg fails and heals, a page alert fires and resolves, an API
// drain comes and goes. It returns the interval it covers.
func (h *labHarness) scenario() (from, to time.Time) {
	from = h.now
	h.run(2 * time.Minute)
	h.down["nuremberg"] = true
	h.run(time.Minute)
	h.down["nuremberg"] = false
	h.run(2 * time.Minute)
	h.al.set(alerts.Alert{Name: "MeridianPOPLatency", Severity: alerts.SeverityPage, Labels: map[string]string{"pop": "paris"}, ActiveAt: h.now})
	h.run(time.Minute)
	h.al.set()
	o, err := h.e.overrides.add(Override{Action: "drain", POP: "london", Region: "united-kingdom", Reason: "maintenance"})
	if err != nil {
		panic(err)
	}
	h.run(time.Minute)
	h.e.overrides.remove(o.ID)
	h.run(2 * time.Minute)
	return from, h.now
}

func TestReplayWithLiveConfigEqualsLive(t *testing.T) {
	h := newLabHarness(t, testConfig(t))
	from, to := h.scenario()
	res, err := Replay(context.Background(), h.history(), testConfig(t), h.inv, ReplayOptions{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Live) < 10 || len(res.Decisions) != len(res.Live) || len(res.Differences) != 0 || !res.FromEngineStart {
		var b bytes.Buffer
		res.Write(&b, "text")
		t.Fatalf("%d replayed, %d live, %d differences, from engine start %v:\n%s", len(res.Decisions), len(res.Live), len(res.Differences), res.FromEngineStart, b.String())
	}
	for i, d := range res.Decisions {
		if l := res.Live[i]; d != l {
			t.Fatalf("decision %d: replayed %+v, live %+v", i, d, l)
		}
	}
	causes := map[string]bool{}
	for _, d := range res.Decisions {
		causes[d.Cause] = true
	}
	for _, c := range []string{CauseHealth, CauseSLO, CauseOverride, CauseRestore} {
		if !causes[c] {
			t.Errorf("the scenario made no %s decision: the replay was not tested on it", c)
		}
	}
	for _, s := range res.Summary {
		if s.ResidencyViolations != 0 {
			t.Errorf("%s/%s: %d residency violations", s.Service, s.Region, s.ResidencyViolations)
		}
	}
}

// A replay that cannot reach back to the engine's start warms up from a keyframe: with a
// warm-up longer than every hold, ramp and dwell in flight, it still matches live.
func TestReplayWarmsUpFromKeyframe(t *testing.T) {
	h := newLabHarness(t, testConfig(t))
	_, to := h.scenario()
	from := to.Add(-5 * time.Minute) // inside the scenario: the page alert is about to fire
	res, err := Replay(context.Background(), h.history(), testConfig(t), h.inv, ReplayOptions{From: from, To: to, Warmup: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.FromEngineStart || res.WarmupTicks == 0 || res.WarmupFrom.Before(from.Add(-3*time.Minute)) {
		t.Fatalf("warm-up from %s (engine start %v, %d ticks), want a keyframe within 3m before %s", res.WarmupFrom, res.FromEngineStart, res.WarmupTicks, from)
	}
	if len(res.Live) == 0 || len(res.Differences) != 0 {
		t.Fatalf("%d live decisions, differences %+v", len(res.Live), res.Differences)
	}
}

// A candidate with min_hold 2m instead of 30s: the same drains at the same times; every
// restore after a hold starts 90 s later; the same number of ramp steps.
func TestReplayCandidateLongerHold(t *testing.T) {
	h := newLabHarness(t, testConfig(t))
	from, to := h.scenario()
	cand, err := LoadCandidate(testConfig(t), h.inv, "candidate.yaml", []byte("steering:\n  min_hold: 2m\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Replay(context.Background(), h.history(), testConfig(t), h.inv, ReplayOptions{From: from, To: to, Candidate: &cand})
	if err != nil {
		t.Fatal(err)
	}
	pick := func(ds []Decision, region, pop string, cause string) []Decision {
		var out []Decision
		for _, d := range ds {
			if d.Service == "api."+lab.Zone && d.Region == region && d.POP == pop && d.Cause == cause {
				out = append(out, d)
			}
		}
		return out
	}
	// France's api: nuremberg drained by health, then restored in 4 steps of 0.25.
	liveDrain, candDrain := pick(res.Live, "france", "nuremberg", CauseHealth), pick(res.Decisions, "france", "nuremberg", CauseHealth)
	if len(liveDrain) != 1 || len(candDrain) != 1 || liveDrain[0] != candDrain[0] {
		t.Fatalf("drains: live %+v, candidate %+v; want the same one", liveDrain, candDrain)
	}
	liveUp, candUp := pick(res.Live, "france", "nuremberg", CauseRestore), pick(res.Decisions, "france", "nuremberg", CauseRestore)
	if len(liveUp) != 4 || len(candUp) != 4 {
		t.Fatalf("restore steps: live %d, candidate %d; want 4 each (0.25 per 5 s)", len(liveUp), len(candUp))
	}
	for i := range liveUp {
		if got := candUp[i].Time.Sub(liveUp[i].Time); got != 90*time.Second || candUp[i].New != liveUp[i].New {
			t.Errorf("restore step %d: candidate %s (%g) vs live %s (%g): want 90s later, same weight", i, candUp[i].Time, candUp[i].New, liveUp[i].Time, liveUp[i].New)
		}
	}
	if len(res.Differences) == 0 {
		t.Fatal("no differences reported")
	}
	// With a 3-minute flap window: live, nuremberg's drain is undone 1m45s later and New
	// York's stand-in weight goes back to 0 at the same time (2 flaps); the candidate
	// restores 3m15s after the drain (none). Drained minutes grow by the 1.5 extra
	// minutes of hold, to one tick (0.2 s).
	summary := func(c *Config) GroupSummary {
		r, err := Replay(context.Background(), h.history(), testConfig(t), h.inv, ReplayOptions{From: from, To: to, Candidate: c, FlapWindow: 3 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range r.Summary {
			if s.Service == "api."+lab.Zone && s.Region == "france" {
				return s
			}
		}
		t.Fatal("no summary for france/api")
		return GroupSummary{}
	}
	live, c := summary(nil), summary(&cand)
	if live.Drains != 1 || c.Drains != 1 || c.LiveDrains != 1 || live.Flaps != 2 || live.LiveFlaps != 2 || c.Flaps != 0 || c.LiveFlaps != 2 {
		t.Errorf("france/api: live %+v, candidate %+v", live, c)
	}
	if d := c.MinutesDrained - live.MinutesDrained; math.Abs(d-1.5) > 0.2/60+1e-9 {
		t.Errorf("candidate drained %.4f min, live %.4f: want 1.5 more", c.MinutesDrained, live.MinutesDrained)
	}
}

// expectedRegret computes, from the lab's RTTs alone, each group's regret when the POP
// out (if any) is not serving but is healthy, and the other candidates within rtt_slack
// (20%) of the best of them share the region's traffic at equal weights.
func expectedRegret(inv *inventory.Inventory, out string) map[[2]string]float64 {
	want := map[[2]string]float64{}
	for _, svc := range inv.Services {
		for _, r := range inv.ClientRegions {
			var cands []string
			for _, p := range svc.POPs {
				if len(r.AllowedPOPs) == 0 || slices.Contains(r.AllowedPOPs, p) {
					cands = append(cands, p)
				}
			}
			cost := func(p string) float64 { pop, _ := inv.POP(p); return lab.RTT(inv, r.Vantage, pop.Site) }
			best, bestServing := math.Inf(1), math.Inf(1)
			for _, p := range cands {
				best = min(best, cost(p))
				if p != out {
					bestServing = min(bestServing, cost(p))
				}
			}
			var sum, n float64
			for _, p := range cands {
				if p != out && cost(p) <= bestServing*1.2 {
					sum, n = sum+cost(p), n+1
				}
			}
			if n == 0 { // residency leaves only the held POP: it serves, last resort
				sum, n = best, 1
			}
			want[[2]string{svc.Name, r.Name}] = sum/n - best
		}
	}
	return want
}

// Regret from the lab's RTTs: what rtt_slack sharing costs in the calm; nothing while the
// nearest POP is down (the best healthy POP serves); while it is held after the heal, the
// difference between the stand-in's RTT and its own; 0 again once restored.
func TestReplayRegret(t *testing.T) {
	h := newLabHarness(t, testConfig(t))
	check := func(when string, want map[[2]string]float64) {
		t.Helper()
		for _, g := range h.e.groups {
			if g.region.Vantage == "" {
				continue
			}
			if w := want[[2]string{g.svc.Name, g.region.Name}]; math.Abs(g.regret-w) > 1e-6 {
				t.Errorf("%s: %s/%s regret %.6f ms, want %.6f", when, g.svc.Name, g.region.Name, g.regret, w)
			}
		}
	}
	h.run(10 * time.Second)
	calm := expectedRegret(h.inv, "")
	if calm[[2]string{"api." + lab.Zone, "france"}] != 0 || calm[[2]string{"www." + lab.Zone, "asia"}] == 0 {
		t.Fatalf("the lab's world changed: %v", calm)
	}
	check("calm", calm)

	h.down["nuremberg"] = true
	h.run(5 * time.Second)
	check("nuremberg down", calm)
	if d := h.lastDecision("france", "nuremberg"); d == nil || d.NewWeight != 0 || d.RegretMs != 0 {
		t.Errorf("the drain decision %+v, want weight 0 and regret 0 (New York was the best healthy POP then)", d)
	}

	h.down["nuremberg"] = false
	h.run(5 * time.Second)
	held := expectedRegret(h.inv, "nuremberg")
	if w := held[[2]string{"api." + lab.Zone, "france"}]; math.Abs(w-(lab.RTT(h.inv, "paris", "newyork")-lab.RTT(h.inv, "paris", "nuremberg"))) > 1e-9 {
		t.Fatalf("france/api held regret %.3f: not New York's RTT minus Nuremberg's", w)
	}
	check("held after the heal", held)
	// The weights the map reads carry it, on each of the group's POPs.
	for _, w := range h.e.Weights().Entries {
		if w.Service == "api."+lab.Zone && w.Region == "france" && math.Abs(w.RegretMs-held[[2]string{w.Service, w.Region}]) > 1e-6 {
			t.Errorf("Weights: %s/%s/%s regret %.3f ms, want %.3f", w.Service, w.Region, w.POP, w.RegretMs, held[[2]string{w.Service, w.Region}])
		}
	}

	h.run(2 * time.Minute)
	check("restored", calm)
	if d := h.lastDecision("france", "nuremberg"); d == nil || d.NewWeight != 1 || d.RegretMs != 0 {
		t.Errorf("the last restore step %+v, want weight 1 and regret 0", d)
	}
}

func TestReplayBadInput(t *testing.T) {
	h := newLabHarness(t, testConfig(t))
	h.run(time.Minute)
	hist := h.history()
	now := h.now
	cfg := testConfig(t)
	for _, tc := range []struct {
		name     string
		from, to time.Time
		want     string
	}{
		{"inverted", now, now.Add(-time.Minute), "is not before"},
		{"too long", now.Add(-MaxReplayInterval - time.Hour), now, "longer than the limit"},
		{"no data", now.Add(time.Hour), now.Add(2 * time.Hour), "no steering inputs recorded"},
	} {
		_, err := Replay(context.Background(), hist, cfg, h.inv, ReplayOptions{From: tc.from, To: tc.to})
		if !errors.Is(err, ErrReplayInput) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"steering:\n  min_hold: -1s\n", "candidate.yaml: steering.min_hold: must be >= 0"},
		{"steering:\n  overrides:\n  - {action: drain, pop: atlantis}\n", `candidate.yaml: steering.overrides[0]: unknown POP "atlantis"`},
		{"steering:\n  min_hodl: 1m\n", "candidate.yaml: steering: yaml: unmarshal errors:\n  line 1: field min_hodl not found"},
		{"inventory: {}\n", "candidate.yaml: no steering: section"},
		{"steering: [\n", "candidate.yaml: yaml:"},
	} {
		if _, err := LoadCandidate(cfg, h.inv, "candidate.yaml", []byte(tc.yaml)); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("candidate %q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// BenchmarkReplay replays one hour of lab history (the replay scenario over and over:
// calm, a POP failure and heal, a page alert, a manual drain; 18,000 ticks of 25 cells)
// and reports the recorded ticks (inputs) replayed per second. Its ratio is against the
// live engine ticking the same hour in the same run (gather, decide, record: the work a
// replay redoes, less the reading). It fails unless the replay made exactly the live
// decisions over every tick.
func BenchmarkReplay(b *testing.B) {
	h := newLabHarness(b, testConfig(b))
	from := h.now
	start := time.Now()
	for h.now.Sub(from) < time.Hour {
		h.scenario()
	}
	live := time.Since(start)
	to := h.now
	hist := h.history()
	recorded, _ := hist.Inputs(context.Background(), from, to)
	b.ResetTimer()
	var res *ReplayResult
	cpu0 := cpuTime()
	begin := time.Now()
	for range b.N {
		var err error
		if res, err = Replay(context.Background(), hist, testConfig(b), h.inv, ReplayOptions{From: from, To: to}); err != nil {
			b.Fatal(err)
		}
	}
	took := time.Since(begin) / time.Duration(b.N)
	cpu := (cpuTime() - cpu0) / time.Duration(b.N)
	b.StopTimer()
	if res.Ticks != len(recorded) || len(res.Differences) != 0 || len(res.Decisions) == 0 {
		b.Fatalf("replayed %d ticks of %d, %d decisions, %d differences", res.Ticks, len(recorded), len(res.Decisions), len(res.Differences))
	}
	rate := float64(res.Ticks) / took.Seconds()
	liveRate := float64(len(recorded)) / (live - h.probeTime).Seconds()
	b.Logf("%s of history (%d ticks, %d decisions) replayed in %s (process CPU %s); the live engine ticked it in %s (probes apart)",
		to.Sub(from).Round(time.Second), res.Ticks, len(res.Decisions), took.Round(time.Millisecond), cpu.Round(time.Millisecond), (live - h.probeTime).Round(time.Millisecond))
	fmt.Printf("BENCH steering_replay_inputs_per_second %.0f inputs/s ratio=%.2f\n", rate, rate/liveRate)
}

// cpuTime is the CPU time this process has used (user and system): on a shared machine a
// wall-clock rate depends on the neighbours.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
