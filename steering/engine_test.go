package steering

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/pipeline"
)

// harness drives an Engine on a fake clock, one Tick at a time.
type harness struct {
	t   *testing.T
	e   *Engine
	rec *recorder
	al  *firing
	now time.Time
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, rec: &recorder{}, al: &firing{}, now: time.Now()}
	e, err := NewEngine(testConfig(t), testInventory(), h.rec, h.al, discard(), newTestRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.now = func() time.Time { return h.now }
	h.e = e
	return h
}

// probe feeds one health probe from vantage to pop at the current fake time.
func (h *harness) probe(vantage, pop string, ok bool, rtt time.Duration) {
	h.e.Consume([]pipeline.Record{&pipeline.Probe{
		M: pipeline.Meta{Time: h.now}, Vantage: vantage, Method: "tcp", POP: pop, Success: ok, RTT: rtt,
	}})
}

// advance moves the clock in tick-sized steps, ticking each time, calling each (if
// non-nil) before every tick so that probes stay fresh.
func (h *harness) advance(d time.Duration, each func()) {
	for end := h.now.Add(d); h.now.Before(end); {
		h.now = h.now.Add(time.Second)
		if each != nil {
			each()
		}
		h.e.Tick(context.Background())
	}
}

func (h *harness) weights(region string) map[string]float64 {
	out := map[string]float64{}
	for _, w := range h.e.Weights().Entries {
		if w.Region == region {
			out[w.POP] = w.Weight
		}
	}
	return out
}

func (h *harness) answers(region string) []string {
	var out []string
	for _, c := range h.e.Answers(service, region).Choices {
		out = append(out, c.POP)
	}
	slices.Sort(out)
	return out
}

func (h *harness) lastDecision(region, pop string) *pipeline.SteeringDecision {
	ds := h.rec.decisions()
	for i := len(ds) - 1; i >= 0; i-- {
		if ds[i].ClientRegion == region && ds[i].POP == pop {
			return ds[i]
		}
	}
	return nil
}

func TestDistanceFallbackPicksNearest(t *testing.T) {
	h := newHarness(t)
	for region, want := range map[string]string{"france": "nbg", "uk": "lon", "us": "nyc", "asia": "tyo", "sweden": "nbg"} {
		if got := h.answers(region); !slices.Equal(got, []string{want}) {
			t.Errorf("region %s served by %v, want [%s]", region, got, want)
		}
	}
	if got := h.answers(DefaultRegion); len(got) != 4 {
		t.Errorf("default region served by %v, want every POP", got)
	}
	// Clients no region names (locate's "") and regions the engine does not know get the
	// default region's answer.
	for _, region := range []string{"", "mars"} {
		if got := h.answers(region); len(got) != 4 {
			t.Errorf("region %q served by %v, want the default region's every POP", region, got)
		}
	}
}

func TestQuorumDrainHoldAndRamp(t *testing.T) {
	h := newHarness(t)
	healthy := func() {
		for _, v := range []string{"paris", "london"} {
			h.probe(v, "nbg", true, 9*time.Millisecond)
			h.probe(v, "nyc", true, 80*time.Millisecond)
		}
	}
	h.advance(2*time.Second, healthy)

	// One vantage of two failing is not a quorum (majority of 2 = 2).
	h.advance(3*time.Second, func() {
		h.probe("paris", "nbg", true, 9*time.Millisecond)
		h.probe("london", "nbg", false, 0)
	})
	if got := h.answers("france"); !slices.Equal(got, []string{"nbg"}) {
		t.Fatalf("one failing vantage drained nbg: france served by %v", got)
	}

	// Both vantages: drained at once, France moves to New York.
	h.probe("paris", "nbg", false, 0)
	h.probe("paris", "nbg", false, 0)
	h.e.Tick(context.Background())
	if got := h.answers("france"); !slices.Equal(got, []string{"nyc"}) {
		t.Fatalf("after quorum failure france served by %v, want [nyc]", got)
	}
	if d := h.lastDecision("france", "nbg"); d == nil || d.Cause != CauseHealth || d.NewWeight != 0 || !strings.Contains(d.Reason, "2 of 2 vantages") {
		t.Fatalf("drain decision = %+v, want cause health, weight 0, quorum reason", d)
	}
	if got := testutil.ToFloat64(h.e.weight.WithLabelValues(service, "france", "nbg")); got != 0 {
		t.Fatalf("meridian_steering_weight for nbg = %v, want 0", got)
	}

	// Recovered: held for MinHold, then ramped in steps of at most RampStep.
	h.advance(h.e.cfg.MinHold-2*time.Second, healthy)
	if w := h.weights("france"); w["nbg"] != 0 {
		t.Fatalf("nbg restored to %v within the hold time", w["nbg"])
	}
	prev := h.weights("france")
	sawBoth := false
	h.advance(60*time.Second, func() {
		healthy()
		cur := h.weights("france")
		for pop, w := range cur {
			if d := w - prev[pop]; d > h.e.cfg.RampStep+1e-9 || d < -h.e.cfg.RampStep-1e-9 {
				t.Fatalf("weight of %s jumped by %v in one tick (bound %v)", pop, d, h.e.cfg.RampStep)
			}
		}
		if cur["nbg"]+cur["nyc"] == 0 {
			t.Fatal("france served by no POP during the restore")
		}
		if cur["nbg"] > 0 && cur["nyc"] > 0 {
			sawBoth = true
		}
		prev = cur
	})
	if w := h.weights("france"); w["nbg"] != 1 || w["nyc"] != 0 {
		t.Fatalf("after restore france weights = %v, want nbg 1, nyc 0", w)
	}
	if !sawBoth {
		t.Fatal("restore was not gradual: never shared traffic between nbg and nyc")
	}
	if d := h.lastDecision("france", "nyc"); d == nil || d.Cause != CauseRTT {
		t.Fatalf("last nyc decision %+v, want cause rtt", d)
	}
}

func TestSLOAlerts(t *testing.T) {
	h := newHarness(t)
	h.al.set(
		alerts.Alert{Name: "PopAvailability", Severity: alerts.SeverityPage, Labels: map[string]string{"pop": "nbg"}},
		alerts.Alert{Name: "PopLatency", Severity: alerts.SeverityTicket, Labels: map[string]string{"pop": "lon", "service": service}},
	)
	h.e.Tick(context.Background())
	if got := h.answers("france"); !slices.Equal(got, []string{"nyc"}) {
		t.Fatalf("page alert on nbg: france served by %v, want [nyc]", got)
	}
	if d := h.lastDecision("france", "nbg"); d == nil || d.Cause != CauseSLO || !strings.Contains(d.Reason, "PopAvailability") {
		t.Fatalf("decision %+v, want cause slo naming the alert", d)
	}
	h.advance(20*time.Second, nil)
	if w := h.weights("uk"); w["lon"] != 0.5 {
		t.Fatalf("ticket alert on lon: uk weight %v, want 0.5", w["lon"])
	}
	if got := h.answers("uk"); !slices.Equal(got, []string{"lon"}) {
		t.Fatalf("ticket alert must lower, not drain: uk served by %v", got)
	}
}

func TestFailOpenKeepsResidency(t *testing.T) {
	h := newHarness(t)
	h.al.set(
		alerts.Alert{Name: "down", Severity: alerts.SeverityPage, Labels: map[string]string{"pop": "nbg"}},
		alerts.Alert{Name: "down", Severity: alerts.SeverityPage, Labels: map[string]string{"pop": "nyc"}},
	)
	h.advance(10*time.Second, nil)
	// Sweden may only use nbg: it keeps nbg although nbg is down.
	if got := h.answers("sweden"); !slices.Equal(got, []string{"nbg"}) {
		t.Fatalf("sweden served by %v, want [nbg] (fail-open inside its allowed set)", got)
	}
	for _, w := range h.e.Weights().Entries {
		if w.Region == "sweden" && w.POP == "nbg" && w.Cause != CauseFailOpen {
			t.Fatalf("sweden/nbg weight %+v, want cause failopen", w)
		}
	}
	// France's allowed set is nbg+nyc, both down: both served, never lon or tyo.
	if got := h.answers("france"); !slices.Equal(got, []string{"nbg", "nyc"}) {
		t.Fatalf("france served by %v, want [nbg nyc]", got)
	}
	for _, d := range h.rec.decisions() {
		if (d.ClientRegion == "sweden" && d.POP != "nbg" || d.ClientRegion == "france" && d.POP != "nbg" && d.POP != "nyc") && d.NewWeight > 0 {
			t.Fatalf("residency broken: %+v", d)
		}
	}
}

func TestMeasuredRTTBeatsDistance(t *testing.T) {
	h := newHarness(t)
	// London's vantage measures Tokyo closer than London itself (say, a broken path):
	// measured RTT wins over distance, but only after the dwell time.
	fresh := func() {
		h.probe("london", "lon", true, 90*time.Millisecond)
		h.probe("london", "tyo", true, 10*time.Millisecond)
		h.probe("london", "nbg", true, 60*time.Millisecond)
		h.probe("london", "nyc", true, 70*time.Millisecond)
	}
	h.advance(5*time.Second, fresh)
	if got := h.answers("uk"); !slices.Equal(got, []string{"lon"}) {
		t.Fatalf("RTT choice changed within RTTDwell: uk served by %v", got)
	}
	h.advance(h.e.cfg.RTTDwell+30*time.Second, fresh)
	if w := h.weights("uk"); w["tyo"] != 1 || w["lon"] != 0 {
		t.Fatalf("uk weights %v, want tyo 1 and lon 0", w)
	}
}

// TestRTTNoiseMovesNothing feeds RTTs that jitter around fixed values for half an hour:
// around equal values, and around the edge of the sharing band, where a POP is as near
// to joining as to staying out. Noise must not change a single weight.
func TestRTTNoiseMovesNothing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lon, nbg time.Duration // London's view; nyc and tyo are far
		noise    float64       // each probe's RTT is off by up to this fraction, either way
	}{
		{"equal", 10 * time.Millisecond, 10 * time.Millisecond, 0.3},
		{"band edge", 10 * time.Millisecond, 12 * time.Millisecond, 0.15},
		{"just outside the band", 10 * time.Millisecond, 12500 * time.Microsecond, 0.15},
		{"just inside the band", 10 * time.Millisecond, 11500 * time.Microsecond, 0.15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			rnd := rand.New(rand.NewPCG(1, 2))
			jitter := func(d time.Duration) time.Duration {
				return time.Duration(float64(d) * (1 + tc.noise*(2*rnd.Float64()-1)))
			}
			fresh := func() {
				h.probe("london", "lon", true, jitter(tc.lon))
				h.probe("london", "nbg", true, jitter(tc.nbg))
				h.probe("london", "nyc", true, jitter(70*time.Millisecond))
				h.probe("london", "tyo", true, jitter(200*time.Millisecond))
			}
			// Warm-up: measured RTTs replace the distance estimate, and the choice settles
			// once the noise lets a change be wanted for a whole dwell.
			h.advance(10*time.Minute, fresh)
			before := len(h.rec.decisions())
			settled := h.weights("uk")
			h.advance(30*time.Minute, fresh)
			var moved []string
			for _, d := range h.rec.decisions()[before:] {
				if d.ClientRegion == "uk" {
					moved = append(moved, fmt.Sprintf("%s %v->%v", d.POP, d.OldWeight, d.NewWeight))
				}
			}
			if len(moved) > 0 {
				t.Fatalf("noise moved uk's weights %d times (settled at %v): %v", len(moved), settled, moved)
			}
		})
	}
}

// TestRTTSustainedImprovementMoves: a POP that becomes and stays clearly nearer takes the
// traffic, but only after RTTDwell, and then ramps in bounded steps.
func TestRTTSustainedImprovementMoves(t *testing.T) {
	h := newHarness(t)
	nbg := 30 * time.Millisecond
	fresh := func() {
		h.probe("london", "lon", true, 10*time.Millisecond)
		h.probe("london", "nbg", true, nbg)
	}
	h.advance(2*time.Minute, fresh)
	if w := h.weights("uk"); w["lon"] != 1 || w["nbg"] != 0 {
		t.Fatalf("uk weights %v, want lon 1", w)
	}
	nbg = 5 * time.Millisecond // a real, lasting improvement: half London's RTT
	h.advance(h.e.cfg.RTTDwell-5*time.Second, fresh)
	if w := h.weights("uk"); w["lon"] != 1 || w["nbg"] != 0 {
		t.Fatalf("uk weights %v before the dwell ended, want still lon 1", w)
	}
	h.advance(10*time.Second+4*h.e.cfg.RampInterval, fresh)
	if w := h.weights("uk"); w["lon"] != 0 || w["nbg"] != 1 {
		t.Fatalf("uk weights %v after dwell and ramp, want nbg 1", w)
	}
	if d := h.lastDecision("uk", "nbg"); d == nil || d.Cause != CauseRTT {
		t.Fatalf("decision %+v, want cause rtt", d)
	}
}

func TestOverrideAPI(t *testing.T) {
	h := newHarness(t)
	srv := httptest.NewServer(RequireToken("s3cret", h.e.Handler()))
	t.Cleanup(srv.Close)
	do := func(method, path, token, body string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, tok := range []string{"", "wrong"} {
		if r := do("POST", "/api/steering/overrides", tok, `{"action":"drain","pop":"nyc"}`); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token %q: status %d, want 401", tok, r.StatusCode)
		}
	}
	if r := do("POST", "/api/steering/overrides", "s3cret", `{"action":"pin","pop":"lon","region":"france"}`); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("pin breaking residency: status %d, want 400", r.StatusCode)
	}
	if r := do("POST", "/api/steering/overrides", "s3cret", `{"action":"drain","pop":"nyc","reason":"maintenance"}`); r.StatusCode != http.StatusCreated {
		t.Fatalf("drain: status %d, want 201", r.StatusCode)
	}
	h.e.Tick(context.Background())
	if got := h.answers("us"); slices.Contains(got, "nyc") || len(got) == 0 {
		t.Fatalf("us served by %v after draining nyc", got)
	}
	if d := h.lastDecision("us", "nyc"); d == nil || d.Cause != CauseOverride {
		t.Fatalf("decision %+v, want cause override", d)
	}
	var ws Weights
	json.NewDecoder(do("GET", "/api/steering/weights", "s3cret", "").Body).Decode(&ws)
	if len(ws.Entries) == 0 {
		t.Fatal("weights endpoint returned no entries")
	}
	var ovs []Override
	json.NewDecoder(do("GET", "/api/steering/overrides", "s3cret", "").Body).Decode(&ovs)
	if len(ovs) != 1 || ovs[0].Source != "api" {
		t.Fatalf("overrides = %+v", ovs)
	}
	if r := do("DELETE", "/api/steering/overrides/"+ovs[0].ID, "s3cret", ""); r.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: status %d", r.StatusCode)
	}
	if r := do("POST", "/api/steering/overrides", "s3cret", `{"action":"drain","pop":"nyc","bogus":1}`); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown field: status %d, want 400", r.StatusCode)
	}
}

func TestConfigOverridesAreValidated(t *testing.T) {
	cfg := testConfig(t)
	cfg.Overrides = []Override{{Action: "pin", POP: "tyo", Region: "sweden"}}
	_, err := NewEngine(cfg, testInventory(), &recorder{}, nil, discard(), newTestRegistry())
	if err == nil || !strings.Contains(err.Error(), "steering.overrides[0]") || !strings.Contains(err.Error(), "residency") {
		t.Fatalf("err = %v, want a residency error naming steering.overrides[0]", err)
	}
}

// TestMetricsRegisterOnce: a second engine on the same registry is refused, naming the
// steering metrics, rather than sharing the first engine's series.
func TestMetricsRegisterOnce(t *testing.T) {
	reg := newTestRegistry()
	if _, err := NewEngine(testConfig(t), testInventory(), &recorder{}, nil, discard(), reg); err != nil {
		t.Fatal(err)
	}
	_, err := NewEngine(testConfig(t), testInventory(), &recorder{}, nil, discard(), reg)
	if err == nil || !strings.Contains(err.Error(), "steering metrics") {
		t.Fatalf("second engine on one registry: err = %v, want a steering metrics error", err)
	}
}

// TestApplyOverrides replaces the configuration's overrides as a reload does: the ones
// set through the API stay, an unchanged one keeps its ID, a refused list changes nothing.
func TestApplyOverrides(t *testing.T) {
	h := newHarness(t)
	api, err := h.e.overrides.add(Override{Action: "pin", POP: "nyc", Region: "uk", Source: "api"})
	if err != nil {
		t.Fatal(err)
	}
	drain := Override{Action: "drain", POP: "nbg", Reason: "maintenance"}
	if err := h.e.ApplyOverrides([]Override{drain}); err != nil {
		t.Fatal(err)
	}
	first := h.e.overrides.all()
	if len(first) != 2 || first[0].POP != "nbg" || first[0].Source != "config" || first[1] != api {
		t.Fatalf("overrides %+v, want the config drain and the API pin", first)
	}
	h.advance(30*time.Second, nil)
	if got := h.answers("france"); slices.Contains(got, "nbg") {
		t.Fatalf("france served by drained nbg: %v", got)
	}

	if err := h.e.ApplyOverrides([]Override{drain, {Action: "drain", POP: "lon"}}); err != nil {
		t.Fatal(err)
	}
	if got := h.e.overrides.all(); len(got) != 3 || got[0] != first[0] || got[1].POP != "lon" || got[2] != api {
		t.Fatalf("overrides %+v: the unchanged drain must keep ID %s, the API pin stay", got, first[0].ID)
	}
	before := h.e.overrides.all()
	err = h.e.ApplyOverrides([]Override{{Action: "drain", POP: "zrh"}})
	if err == nil || !strings.Contains(err.Error(), "steering.overrides[0]") || !slices.Equal(h.e.overrides.all(), before) {
		t.Fatalf("unknown POP: err %v, overrides %+v", err, h.e.overrides.all())
	}

	if err := h.e.ApplyOverrides(nil); err != nil {
		t.Fatal(err)
	}
	if got := h.e.overrides.all(); len(got) != 1 || got[0] != api {
		t.Fatalf("overrides %+v after the file dropped its own, want the API pin only", got)
	}
}

func TestPinOverride(t *testing.T) {
	h := newHarness(t)
	if _, err := h.e.overrides.add(Override{Action: "pin", POP: "nyc", Region: "uk", Source: "test"}); err != nil {
		t.Fatal(err)
	}
	h.advance(30*time.Second, nil)
	if got := h.answers("uk"); !slices.Equal(got, []string{"nyc"}) {
		t.Fatalf("uk pinned to nyc served by %v", got)
	}
	if d := h.lastDecision("uk", "nyc"); d == nil || d.Cause != CauseOverride {
		t.Fatalf("pin decision %+v, want cause override", d)
	}
	// A pin of every region to a POP outside a region's allowed set leaves that region alone.
	if _, err := h.e.overrides.add(Override{Action: "pin", POP: "tyo", Source: "test"}); err != nil {
		t.Fatal(err)
	}
	h.advance(30*time.Second, nil)
	if got := h.answers("sweden"); !slices.Equal(got, []string{"nbg"}) {
		t.Fatalf("global pin to tyo moved sweden (residency nbg) to %v", got)
	}
}

// refusing is an Appender that refuses while closed, as a pipeline that has not started.
type refusing struct {
	recorder
	open bool
}

func (r *refusing) Append(ctx context.Context, recs ...pipeline.Record) error {
	if !r.open {
		return pipeline.ErrStopped
	}
	return r.recorder.Append(ctx, recs...)
}

func TestDecisionsRefusedAtStartArriveLater(t *testing.T) {
	app := &refusing{}
	e, err := NewEngine(testConfig(t), testInventory(), app, nil, discard(), newTestRegistry())
	if err != nil {
		t.Fatal(err)
	}
	first := 0
	for _, r := range e.pending {
		if _, ok := r.(*pipeline.SteeringDecision); ok {
			first++
		}
	}
	if first == 0 {
		t.Fatal("the first tick made no decisions to record")
	}
	app.open = true
	e.Tick(context.Background())
	if got := len(app.decisions()); got < first || len(e.pending) != 0 {
		t.Fatalf("%d decisions recorded after the pipeline opened, %d still pending; want the first tick's %d", got, len(e.pending), first)
	}
}
