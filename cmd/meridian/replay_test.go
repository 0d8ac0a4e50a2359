package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/lab"
	"github.com/meridianhq/meridian/steering"
)

// TestLabReplay runs the lab with every module for a few minutes: calm, `fail pop
// nuremberg`, heal, back to full weight. No SLO specs: the probes alone steer, so that
// the heal's timing does not hang on alert windows (the replay of alerts is tested in
// steering). It stops Meridian (the pipeline flushes) and
// replays the interval from ClickHouse with the live configuration: the replay makes
// exactly the live decisions (time, weights, cause, reason). Regret, read from /metrics:
// a median of 0 in the calm for every group on its nearest POP alone (France's api on
// Nuremberg among them); while Nuremberg is held after the heal, France's is the lab's
// great-circle difference New York − Nuremberg, within the probes' own deviation from
// the lab's delays plus 10 ms. -short skips.
func TestLabReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("the lab replay takes about 3 minutes")
	}
	ctx, cfg, l, logger := labSetup(t, "labreplay")
	a := newApp(cfg, logger)
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serveApp(actx, a) }()
	var stopped error
	var once sync.Once
	stopApp := func() error { once.Do(func() { stop(); stopped = <-done }); return stopped }
	t.Cleanup(func() { stopApp() }) // before the temporary directory goes
	if err := waitReady(ctx, "http://"+cfg.Server.ListenAddress, 2*time.Minute, done); err != nil {
		t.Fatal(err)
	}
	api := "api." + lab.Zone
	weight := func(region, pop string) float64 {
		for _, w := range a.steering.Weights().Entries {
			if w.Service == api && w.Region == region && w.POP == pop {
				return w.Weight
			}
		}
		return -1
	}
	regret := func(svc, region string) float64 {
		return promtest.Sum(t, a.reg, "meridian_steering_regret_milliseconds", "service", svc, "region", region)
	}
	// The calm: every region on its nearest POP once probes have measured, after 30 s
	// of warm-up (as the soak's).
	wait.Until(t, time.Minute, "France's api on Nuremberg", func() bool { return weight("france", "nuremberg") == 1 })
	ready := time.Now()
	wait.Until(t, time.Minute, "30 s of warm-up", func() bool { return time.Since(ready) > 30*time.Second })
	from := time.Now()
	calm := [][2]string{{api, "france"}, {api, "united-kingdom"}, {api, "asia"}, {"www." + lab.Zone, "north-america"}}
	samples := map[[2]string][]float64{}
	// A group answered by one POP at full weight, the nearest of its POPs to its vantage
	// by the lab's great-circle RTTs, is on its nearest POP: its regret is 0.
	onNearest := func(svc, region string) bool {
		var vantage string
		for _, r := range cfg.Inventory.ClientRegions {
			if r.Name == region {
				vantage = r.Vantage
			}
		}
		site := func(pop string) string { p, _ := cfg.Inventory.POP(pop); return p.Site }
		var on string
		nearest, best := "", math.Inf(1)
		for _, w := range a.steering.Weights().Entries {
			if w.Service != svc || w.Region != region {
				continue
			}
			if w.Weight > 0 {
				if on != "" || w.Weight != 1 {
					return false
				}
				on = w.POP
			}
			if d := lab.RTT(&cfg.Inventory, vantage, site(w.POP)); d < best {
				nearest, best = w.POP, d
			}
		}
		return on != "" && on == nearest
	}
	// A sample's regret uses the probes' latest smoothed RTTs, which a loaded machine can
	// briefly put in another order: the median is what is asserted.
	nearestAlways := map[[2]string]bool{}
	for _, g := range calm {
		nearestAlways[g] = true
	}
	wait.Until(t, time.Minute, "20 s of calm", func() bool {
		for _, g := range calm {
			samples[g] = append(samples[g], regret(g[0], g[1]))
			nearestAlways[g] = nearestAlways[g] && onNearest(g[0], g[1])
		}
		return time.Since(from) > 20*time.Second
	})
	if !nearestAlways[[2]string{api, "france"}] {
		t.Errorf("calm: France's api not on Nuremberg alone throughout")
	}

	if err := l.State().Fail(lab.Failure{Kind: "pop", Target: "nuremberg"}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, time.Minute, "France's api drained from Nuremberg", func() bool { return weight("france", "nuremberg") == 0 })
	failed := time.Now()
	wait.Until(t, time.Minute, "20 s of failure", func() bool { return time.Since(failed) > 20*time.Second })
	l.State().Heal()
	healed := time.Now()

	// Held: Nuremberg answers again but stays at 0 for min_hold; regret is what France
	// pays for it. Samples where the probes still see it failing (regret 0) are skipped.
	var held []float64
	wait.Until(t, 4*time.Minute, "the hold to end", func() bool {
		if r := regret(api, "france"); r > 0 && weight("france", "nuremberg") == 0 && weight("france", "newyork") == 1 {
			held = append(held, r)
		}
		return weight("france", "nuremberg") > 0
	})
	wait.Until(t, 4*time.Minute, "France's api back on Nuremberg", func() bool { return weight("france", "nuremberg") == 1 })
	to := time.Now().Add(2 * time.Second)
	wait.Until(t, time.Minute, "2 s more of ticks", func() bool { return time.Now().After(to.Add(time.Second)) })
	if err := stopApp(); err != nil {
		t.Fatal(err)
	}

	// Regret from the live lab, logged: its RTTs are the probes' smoothed RTTs, the lab's
	// delays plus what the loaded machine adds, so it is compared with the probes' own
	// medians (stored probes); TestReplayRegret in steering checks it exactly against the
	// lab's great-circle RTTs.
	for g, v := range samples {
		slices.Sort(v)
		t.Logf("calm: %s/%s regret median %.1f ms of %d samples (%.1f..%.1f), on its nearest POP alone throughout: %v", g[0], g[1], v[len(v)/2], len(v), v[0], v[len(v)-1], nearestAlways[g])
		if nearestAlways[g] && v[len(v)/2] != 0 {
			t.Errorf("calm: %s/%s on its nearest POP alone has a median regret of %.3f ms, want 0", g[0], g[1], v[len(v)/2])
		}
	}
	rtts, err := a.store.Query(ctx, fmt.Sprintf("SELECT pop, quantile(0.5)(rtt) / 1e6 FROM labreplay.probes WHERE vantage = 'paris' AND method IN ('tcp', 'http', 'icmp') AND success AND time >= fromUnixTimestamp64Milli(%d) AND pop IN ('newyork', 'nuremberg') GROUP BY pop ORDER BY pop", from.UnixMilli()), "TSV")
	if err != nil {
		t.Fatal(err)
	}
	// While Nuremberg is held, France pays New York's RTT instead of Nuremberg's: the lab's
	// great-circle difference. Regret is computed from the probes' RTTs, which a loaded
	// machine inflates past the lab's delays, so the tolerance is the probes' own deviation
	// from the lab's difference (their medians over the run) plus 10 ms.
	gc := lab.RTT(&cfg.Inventory, "paris", "newyork") - lab.RTT(&cfg.Inventory, "paris", "nuremberg")
	var probeNYC, probeNBG float64
	if _, err := fmt.Sscanf(string(rtts), "newyork\t%g\nnuremberg\t%g\n", &probeNYC, &probeNBG); err != nil {
		t.Fatalf("probe medians from Paris %q: %v", rtts, err)
	}
	tolerance := math.Abs(probeNYC-probeNBG-gc) + 10
	slices.Sort(held)
	if len(held) == 0 {
		t.Fatal("no regret sample while Nuremberg was held")
	}
	median := held[len(held)/2]
	t.Logf("France's api regret while Nuremberg is held (heal at %s): median %.1f ms of %d samples (%.1f..%.1f); median probe RTTs from Paris: New York %.1f ms, Nuremberg %.1f ms; the lab's great-circle difference %.1f ms, tolerance %.1f ms",
		healed.Format(time.TimeOnly), median, len(held), held[0], held[len(held)-1], probeNYC, probeNBG, gc, tolerance)
	if math.Abs(median-gc) > tolerance {
		t.Errorf("France's regret while Nuremberg is held: median %.1f ms, want the lab's %.1f ms ± %.1f", median, gc, tolerance)
	}

	res, err := steering.Replay(ctx, steering.NewHistory(a.store, cfg.Storage.Database), cfg.Steering, &cfg.Inventory, steering.ReplayOptions{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res.Write(&out, "text")
	t.Logf("\n%s", out.String())
	if !res.FromEngineStart || len(res.Differences) != 0 || len(res.Decisions) != len(res.Live) {
		t.Fatalf("replay with the live configuration: %d decisions, %d live, %d differences, from engine start %v", len(res.Decisions), len(res.Live), len(res.Differences), res.FromEngineStart)
	}
	for i := range res.Live {
		if res.Decisions[i] != res.Live[i] {
			t.Fatalf("decision %d: replayed %+v, live %+v", i, res.Decisions[i], res.Live[i])
		}
	}
	var drains, restores int
	for _, d := range res.Live {
		if d.Service == api && d.Region == "france" && d.POP == "nuremberg" {
			switch d.Cause {
			case steering.CauseHealth:
				drains++
			case steering.CauseRestore:
				restores++
			}
		}
	}
	if drains != 1 || restores != 4 {
		t.Errorf("France's api: %d health drains and %d restore steps of Nuremberg live, want 1 and 4", drains, restores)
	}
	// What recording the inputs costs, next to the probes that fed them.
	size, err := a.store.Query(ctx, "SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) FROM system.parts WHERE database = 'labreplay' AND active AND table IN ('probes', 'steering_inputs', 'steering_decisions') GROUP BY table ORDER BY table", "TSV")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s of lab; table, rows, compressed bytes, uncompressed bytes:\n%s", time.Since(from).Round(time.Second), size)
}
