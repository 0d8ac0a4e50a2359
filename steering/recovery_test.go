package steering

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/meridianhq/meridian/alerts"
)

// probesNBG feeds one round of probes from France's and the UK's vantages: nbg answering
// or not, nyc answering.
func (h *harness) probesNBG(nbgUp bool) {
	for _, v := range []string{"paris", "london"} {
		h.probe(v, "nbg", nbgUp, 9*time.Millisecond)
		h.probe(v, "nyc", true, 80*time.Millisecond)
	}
}

// TestHealedPOPRecoversDespiteFiringAlerts: nbg fails, its page and ticket alerts fire
// and stay firing long after the heal (their long windows). Steering drains at once,
// then restores nbg on the probes' word: held MinHold after the probes see it answer,
// ramped, and at full weight within 2 minutes of the heal.
func TestHealedPOPRecoversDespiteFiringAlerts(t *testing.T) {
	h := newHarness(t)
	h.advance(10*time.Second, func() { h.probesNBG(true) })

	fail := h.now
	var drainedAfter time.Duration
	h.advance(5*time.Second, func() {
		h.probesNBG(false)
		if drainedAfter == 0 && h.weights("france")["nbg"] == 0 {
			drainedAfter = h.now.Sub(fail)
		}
	})
	// One probe per second and fail_threshold 2: the second failed probe drains, and the
	// harness ticks once per second after probing.
	if drainedAfter == 0 || drainedAfter > 3*time.Second {
		t.Fatalf("nbg drained %v after failing, want within 3 s", drainedAfter)
	}
	// The burn-rate alerts fire a while into the outage, and stay firing after the heal.
	h.al.set(
		alerts.Alert{Name: "MeridianPOPAvailability", Severity: alerts.SeverityPage, Labels: map[string]string{"pop": "nbg", "service": service}, ActiveAt: h.now},
		alerts.Alert{Name: "MeridianPOPAvailability", Severity: alerts.SeverityTicket, Labels: map[string]string{"pop": "nbg", "service": service}, ActiveAt: h.now.Add(time.Second)},
	)
	h.advance(5*time.Minute, func() { h.probesNBG(false) })
	if w := h.weights("france"); w["nbg"] != 0 || w["nyc"] != 1 {
		t.Fatalf("during the outage france weights %v, want nyc only", w)
	}

	heal := h.now
	var full time.Duration
	prev := h.weights("france")["nbg"]
	h.advance(3*time.Minute, func() {
		h.probesNBG(true)
		w := h.weights("france")
		if d := w["nbg"] - prev; d > h.e.cfg.RampStep+1e-9 {
			t.Fatalf("nbg weight jumped by %v in one tick", d)
		}
		if w["nbg"] > 0 && h.now.Sub(heal) < h.e.cfg.MinHold {
			t.Fatalf("nbg got traffic %v after the heal, within the hold (%v)", h.now.Sub(heal), h.e.cfg.MinHold)
		}
		if w["nbg"]+w["nyc"] == 0 {
			t.Fatal("france served by no POP during the restore")
		}
		if full == 0 && w["nbg"] == 1 {
			full = h.now.Sub(heal)
		}
		prev = w["nbg"]
	})
	if full == 0 || full > 2*time.Minute {
		t.Fatalf("nbg back at full weight %v after the heal, want within 2m (alerts still firing)", full)
	}
	t.Logf("drained %v after the failure; full weight %v after the heal, both alerts still firing", drainedAfter, full)
	if d := h.lastDecision("france", "nbg"); d == nil || d.NewWeight != 1 || d.Cause != CauseRestore {
		t.Fatalf("last nbg decision %+v, want the ramp's last step to 1, cause restore", d)
	}

	// A single failed probe later (below fail_threshold) does not wake the firing alerts.
	h.probe("paris", "nbg", false, 0)
	h.e.Tick(context.Background())
	if w := h.weights("france"); w["nbg"] != 1 {
		t.Fatalf("one failed probe under a still-firing alert moved nbg to %v", w["nbg"])
	}
	// One vantage failing for good (no quorum) is what the alert is for: it holds again.
	h.advance(5*time.Second, func() {
		h.probe("paris", "nbg", false, 0)
		h.probe("london", "nbg", true, 9*time.Millisecond)
		h.probe("paris", "nyc", true, 80*time.Millisecond)
		h.probe("london", "nyc", true, 80*time.Millisecond)
	})
	if w := h.weights("france"); w["nbg"] != 0 {
		t.Fatalf("a vantage failing nbg for good under its firing page alert: nbg weight %v, want 0", w["nbg"])
	}
}

// TestUnexplainedAlertHoldsUntilResolved: an alert the probes never saw a reason for
// (they answer all along) drains the POP until it resolves, then hold and ramp.
func TestUnexplainedAlertHoldsUntilResolved(t *testing.T) {
	h := newHarness(t)
	healthy := func() { h.probesNBG(true) }
	h.advance(10*time.Second, healthy)
	h.al.set(alerts.Alert{Name: "MeridianPOPLatency", Severity: alerts.SeverityPage, Labels: map[string]string{"pop": "nbg"}, ActiveAt: h.now})
	h.advance(10*time.Minute, healthy)
	if w := h.weights("france"); w["nbg"] != 0 {
		t.Fatalf("unexplained page alert: nbg weight %v, want 0 while it fires", w["nbg"])
	}
	h.al.set()
	resolved := h.now
	h.advance(h.e.cfg.MinHold-time.Second, healthy)
	if w := h.weights("france"); w["nbg"] != 0 {
		t.Fatalf("nbg weight %v within the hold after the alert resolved", w["nbg"])
	}
	h.advance(2*time.Minute-h.e.cfg.MinHold, healthy)
	if w := h.weights("france"); w["nbg"] != 1 {
		t.Fatalf("nbg weight %v %v after the alert resolved, want 1", w["nbg"], h.now.Sub(resolved))
	}
}

// TestHeldPOPBeatsFailOpen: when the only other allowed POP fails while one is still in
// its hold, the held POP (answering again) serves, not a fail-open to the failing one.
func TestHeldPOPBeatsFailOpen(t *testing.T) {
	h := newHarness(t)
	round := func(nbgUp, nycUp bool) func() {
		return func() {
			for _, v := range []string{"paris", "london"} {
				h.probe(v, "nbg", nbgUp, 9*time.Millisecond)
				h.probe(v, "nyc", nycUp, 80*time.Millisecond)
			}
		}
	}
	h.advance(10*time.Second, round(true, true))
	h.advance(5*time.Second, round(true, false)) // nyc fails, nbg serves France anyway
	h.advance(5*time.Second, round(true, true))  // nyc answers again: held
	h.advance(3*time.Second, round(false, true)) // nbg fails within nyc's hold
	if got := h.answers("france"); !slices.Equal(got, []string{"nyc"}) {
		t.Fatalf("france served by %v (weights %v), want the held but answering nyc only", got, h.weights("france"))
	}
}
