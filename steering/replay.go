package steering

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Replay bounds and defaults.
const (
	// MaxReplayInterval bounds one replay (its warm-up not counted): an hour of lab
	// history replays in well under a second (BenchmarkReplay), but the rows are held in
	// memory while it runs.
	MaxReplayInterval = 24 * time.Hour
	// DefaultReplayWarmup is how much history before From a replay feeds the engine
	// unreported, to rebuild its holds, ramps and RTT choices: longer than the longest
	// of them with the defaults (an explained alert's 5-minute lag, min_hold, rtt_dwell).
	DefaultReplayWarmup = 15 * time.Minute
	// DefaultFlapWindow: a change undone within this long counts as a flap.
	DefaultFlapWindow = 5 * time.Minute
)

// ErrReplayInput marks a replay refused for its input (interval, data, configuration),
// not for a failure of the store.
var ErrReplayInput = errors.New("replay")

// History is where a replay reads what the live engine read and decided.
type History interface {
	// Inputs returns the recorded ticks in [from, to], in time order.
	Inputs(ctx context.Context, from, to time.Time) ([]*pipeline.SteeringInputs, error)
	// Decisions returns the live decisions in [from, to], in time order.
	Decisions(ctx context.Context, from, to time.Time) ([]*pipeline.SteeringDecision, error)
}

// ReplayOptions chooses the interval and the configuration of a replay.
type ReplayOptions struct {
	From, To   time.Time
	Candidate  *Config       // nil: the live configuration
	Warmup     time.Duration // 0: DefaultReplayWarmup
	FlapWindow time.Duration // 0: DefaultFlapWindow
}

// Decision is one weight change, replayed or live.
type Decision struct {
	Time     time.Time `json:"time"` // millisecond precision, as stored
	Service  string    `json:"service"`
	Region   string    `json:"region"`
	POP      string    `json:"pop"`
	Old      float64   `json:"old_weight"`
	New      float64   `json:"new_weight"`
	Cause    string    `json:"cause"`
	Reason   string    `json:"reason"`
	RegretMs float64   `json:"regret_ms"`
	// Utilisation and Headroom of the POP as the tick read them (pipeline.SteeringDecision).
	Utilisation float64 `json:"utilisation"`
	Headroom    float64 `json:"headroom"`
}

// Difference is a decision that the replay and the live engine did not make alike.
type Difference struct {
	Kind     string    `json:"kind"` // replay_only, live_only, differs
	Replayed *Decision `json:"replayed,omitempty"`
	Live     *Decision `json:"live,omitempty"`
}

// GroupSummary is a replay's account of one service as seen from one client region.
type GroupSummary struct {
	Service             string  `json:"service"`
	Region              string  `json:"region"`
	WeightChanges       int     `json:"weight_changes"`
	Drains              int     `json:"drains"`          // changes from serving to 0
	MinutesDrained      float64 `json:"minutes_drained"` // POP-minutes at 0 by a drain or its hold (health, slo, override)
	Flaps               int     `json:"flaps"`           // changes undone within the flap window
	ResidencyViolations int     `json:"residency_violations"`
	RegretMeanMs        float64 `json:"regret_mean_ms"`
	RegretMaxMs         float64 `json:"regret_max_ms"`
	LiveWeightChanges   int     `json:"live_weight_changes"`
	LiveDrains          int     `json:"live_drains"`
	LiveFlaps           int     `json:"live_flaps"`
}

// ReplayResult is what a replay decided, how it differs from what was decided live, and
// a summary per service and region.
type ReplayResult struct {
	From       time.Time `json:"from"`
	To         time.Time `json:"to"`
	Candidate  bool      `json:"candidate"` // a candidate configuration, not the live one
	WarmupFrom time.Time `json:"warmup_from"`
	// FromEngineStart: the replay began at the live engine's first tick, with the same
	// empty state, so with the live configuration it gives exactly the live decisions.
	// Otherwise it began at a keyframe before From and its state converged during the
	// warm-up once the holds, ramps and dwells in flight there had played out.
	FromEngineStart bool           `json:"from_engine_start"`
	Ticks           int            `json:"ticks"`        // ticks replayed in [From, To]
	WarmupTicks     int            `json:"warmup_ticks"` // before From, unreported
	Decisions       []Decision     `json:"decisions"`
	Live            []Decision     `json:"live"`
	Differences     []Difference   `json:"differences"`
	Summary         []GroupSummary `json:"summary"`
}

// LoadCandidate reads a candidate configuration: a YAML file with a `steering:` section
// (a whole Meridian configuration will do; other sections are ignored). Its fields
// replace those of base, the live configuration, so a candidate may name only what it
// changes. Its overrides replace the live configuration's; those set through the API
// during the interval stay, as a reload would keep them. name labels errors.
func LoadCandidate(base Config, inv *inventory.Inventory, name string, data []byte) (Config, error) {
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	node, ok := doc["steering"]
	if !ok {
		return Config{}, fmt.Errorf("%s: no steering: section", name)
	}
	raw, err := yaml.Marshal(&node)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	cfg := base
	cfg.Overrides = nil
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%s: steering: %w", name, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	if _, err := newOverrideSet(cfg.Overrides, inv); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// Replay runs a fresh engine over the recorded inputs of [From, To], after a warm-up on
// those before it (see ReplayResult.FromEngineStart), and compares its decisions with the
// live ones.
func Replay(ctx context.Context, h History, live Config, inv *inventory.Inventory, opt ReplayOptions) (*ReplayResult, error) {
	switch {
	case opt.From.IsZero() || opt.To.IsZero():
		return nil, fmt.Errorf("%w: both from and to are required", ErrReplayInput)
	case !opt.To.After(opt.From):
		return nil, fmt.Errorf("%w: from %s is not before to %s", ErrReplayInput, opt.From.UTC().Format(time.RFC3339), opt.To.UTC().Format(time.RFC3339))
	case opt.To.Sub(opt.From) > MaxReplayInterval:
		return nil, fmt.Errorf("%w: the interval is %s, longer than the limit of %s: replay it in parts", ErrReplayInput, opt.To.Sub(opt.From), MaxReplayInterval)
	}
	cfg := live
	if opt.Candidate != nil {
		cfg = *opt.Candidate
	}
	warmup := cmp.Or(opt.Warmup, DefaultReplayWarmup)
	recs, err := h.Inputs(ctx, opt.From.Add(-warmup), opt.To)
	if err != nil {
		return nil, fmt.Errorf("replay: reading steering inputs: %w", err)
	}
	if !slices.ContainsFunc(recs, func(r *pipeline.SteeringInputs) bool { return !r.M.Time.Before(opt.From) }) {
		return nil, fmt.Errorf("%w: no steering inputs recorded between %s and %s", ErrReplayInput, opt.From.UTC().Format(time.RFC3339), opt.To.UTC().Format(time.RFC3339))
	}
	liveRecs, err := h.Decisions(ctx, opt.From, opt.To)
	if err != nil {
		return nil, fmt.Errorf("replay: reading live decisions: %w", err)
	}
	res := &ReplayResult{From: opt.From, To: opt.To, Candidate: opt.Candidate != nil}
	acc := map[groupKey]*groupAcc{}
	starts := map[time.Time]bool{} // engine starts, as decision times
	var (
		st  inputsState
		e   *Engine
		log = slog.New(slog.DiscardHandler)
	)
	for i, r := range recs {
		in, fresh, ok := st.apply(r)
		if !ok {
			continue // changes before the first keyframe of their run
		}
		if fresh {
			starts[in.Now.Truncate(time.Millisecond).UTC()] = true
			if e, err = newEngine(cfg, inv, nil, nil, log, prometheus.NewRegistry()); err != nil {
				return nil, fmt.Errorf("replay: %w", err)
			}
			e.replaying = true
			if res.WarmupFrom.IsZero() || in.Now.Before(opt.From) {
				res.WarmupFrom, res.FromEngineStart = in.Now, in.Now.Equal(r.Started)
			}
		}
		if opt.Candidate != nil {
			in.Overrides = candidateOverrides(cfg.Overrides, in.Overrides)
		}
		decs := e.decide(in)
		if in.Now.Before(opt.From) {
			res.WarmupTicks++
			continue
		}
		res.Ticks++
		for _, d := range decs {
			res.Decisions = append(res.Decisions, decisionOf(d.(*pipeline.SteeringDecision)))
		}
		var dt time.Duration // until the next tick: how long this tick's state stood
		if i+1 < len(recs) {
			dt = recs[i+1].M.Time.Sub(in.Now)
		}
		for _, g := range e.groups {
			k := groupKey{g.svc.Name, g.region.Name}
			a := acc[k]
			if a == nil {
				a = &groupAcc{}
				acc[k] = a
			}
			a.ticks++
			a.regretSum += g.regret
			a.regretMax = max(a.regretMax, g.regret)
			for _, p := range g.candidates {
				if en := e.entries[key{g.svc.Name, g.region.Name, p}]; en.w == 0 && slices.Contains(drainCauses, en.cause) {
					a.drained += dt
				}
			}
		}
	}
	for _, d := range liveRecs {
		res.Live = append(res.Live, decisionOf(d))
	}
	res.Differences = diff(res.Decisions, res.Live)
	res.Summary = summarize(inv, acc, res.Decisions, res.Live, cmp.Or(opt.FlapWindow, DefaultFlapWindow), starts)
	return res, nil
}

// candidateOverrides are a candidate's configured overrides with those of the recorded
// ones that came from the API.
func candidateOverrides(cfg, recorded []Override) []Override {
	out := slices.Clone(cfg)
	for _, o := range recorded {
		if o.Source != "config" {
			out = append(out, o)
		}
	}
	return out
}

// drainCauses are the causes of a drain: what takes a POP out for a reason other than
// RTT, and holds it out after (holds keep their drain's cause).
var drainCauses = []string{CauseHealth, CauseSLO, CauseOverride}

func isDrain(d Decision) bool {
	return d.New == 0 && d.Old > 0 && slices.Contains(drainCauses, d.Cause)
}

type groupAcc struct {
	ticks                int
	regretSum, regretMax float64
	drained              time.Duration
}

func decisionOf(d *pipeline.SteeringDecision) Decision {
	return Decision{Time: d.M.Time.Truncate(time.Millisecond).UTC(), Service: d.Service, Region: d.ClientRegion, POP: d.POP,
		Old: d.OldWeight, New: d.NewWeight, Cause: d.Cause, Reason: d.Reason, RegretMs: d.RegretMs,
		Utilisation: d.Utilisation, Headroom: d.Headroom}
}

// decisionKey matches a replayed decision with a live one: the same weight at the same
// millisecond.
func decisionKey(d Decision) string {
	return d.Time.Format(time.RFC3339Nano) + "\x00" + d.Service + "\x00" + d.Region + "\x00" + d.POP
}

// diff lists the decisions made by one side only, and those whose weights, cause or
// reason differ, in time order.
func diff(replayed, live []Decision) []Difference {
	byKey := map[string]*Decision{}
	for i := range live {
		byKey[decisionKey(live[i])] = &live[i]
	}
	var out []Difference
	matched := map[string]bool{}
	for i := range replayed {
		r := &replayed[i]
		k := decisionKey(*r)
		l, ok := byKey[k]
		switch {
		case !ok:
			out = append(out, Difference{Kind: "replay_only", Replayed: r})
		case l.Old != r.Old || l.New != r.New || l.Cause != r.Cause || l.Reason != r.Reason:
			out = append(out, Difference{Kind: "differs", Replayed: r, Live: l})
		}
		matched[k] = ok
	}
	for i := range live {
		if !matched[decisionKey(live[i])] {
			out = append(out, Difference{Kind: "live_only", Live: &live[i]})
		}
	}
	slices.SortStableFunc(out, func(a, b Difference) int {
		return a.decision().Time.Compare(b.decision().Time)
	})
	return out
}

func (d Difference) decision() *Decision { return cmp.Or(d.Replayed, d.Live) }

func summarize(inv *inventory.Inventory, acc map[groupKey]*groupAcc, replayed, live []Decision, flapWindow time.Duration, starts map[time.Time]bool) []GroupSummary {
	sums := map[groupKey]*GroupSummary{}
	get := func(svc, region string) *GroupSummary {
		k := groupKey{svc, region}
		if sums[k] == nil {
			sums[k] = &GroupSummary{Service: svc, Region: region}
		}
		return sums[k]
	}
	for k, a := range acc {
		s := get(k.svc, k.region)
		s.MinutesDrained = a.drained.Minutes()
		s.RegretMaxMs = a.regretMax
		if a.ticks > 0 {
			s.RegretMeanMs = a.regretSum / float64(a.ticks)
		}
	}
	for _, d := range replayed {
		s := get(d.Service, d.Region)
		s.WeightChanges++
		if isDrain(d) {
			s.Drains++
		}
		if d.New > 0 && !allowed(inv, d.Service, d.Region, d.POP) {
			s.ResidencyViolations++
		}
	}
	for _, d := range live {
		s := get(d.Service, d.Region)
		s.LiveWeightChanges++
		if isDrain(d) {
			s.LiveDrains++
		}
	}
	for k, n := range flaps(replayed, flapWindow, starts) {
		get(k.svc, k.region).Flaps = n
	}
	for k, n := range flaps(live, flapWindow, starts) {
		get(k.svc, k.region).LiveFlaps = n
	}
	out := make([]GroupSummary, 0, len(sums))
	for _, s := range sums {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b GroupSummary) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.Region, b.Region))
	})
	return out
}

// flaps counts, per group, the changes of a weight that were undone within window: from
// the first change away from a weight, a change back to it within window is one flap (a
// drain and its restore, however many ramp steps it took; a move and its move back).
// The decisions of an engine's first tick (starts) set weights for the first time: they
// change nothing that was served, so they start no episode.
func flaps(ds []Decision, window time.Duration, starts map[time.Time]bool) map[groupKey]int {
	type episode struct {
		from  float64 // the weight before the first change
		start time.Time
		open  bool
	}
	eps := map[key]*episode{}
	out := map[groupKey]int{}
	for _, d := range ds {
		if starts[d.Time] {
			continue
		}
		k := key{d.Service, d.Region, d.POP}
		e := eps[k]
		if e == nil {
			e = &episode{}
			eps[k] = e
		}
		if !e.open || d.Time.Sub(e.start) > window {
			*e = episode{from: d.Old, start: d.Time, open: true}
		}
		if d.New == e.from {
			out[groupKey{d.Service, d.Region}]++
			e.open = false
		}
	}
	return out
}

// allowed reports whether the service has the POP and residency lets the region be served
// by it, read from the inventory itself rather than from the engine, so that the check is
// independent of it.
func allowed(inv *inventory.Inventory, svc, region, pop string) bool {
	if !slices.ContainsFunc(inv.Services, func(s inventory.Service) bool {
		return dns.CanonicalName(s.Name) == svc && slices.Contains(s.POPs, pop)
	}) {
		return false
	}
	for _, r := range inv.ClientRegions {
		if r.Name == region && len(r.AllowedPOPs) > 0 && !slices.Contains(r.AllowedPOPs, pop) {
			return false
		}
	}
	return true
}

// replayGauges show the last replay the API ran next to what was decided live over the
// same interval, for the steering dashboard's comparison panel.
type replayGauges struct {
	changes     *prometheus.GaugeVec // service, region, run (replay, live), kind (weight_changes, drains, flaps)
	regret      *prometheus.GaugeVec // service, region: the replay's mean regret
	differences *prometheus.GaugeVec // candidate: absent until a replay ran
}

func newReplayGauges(m *metricSet) replayGauges {
	return replayGauges{
		changes: m.gauge("meridian_steering_replay_changes",
			"Of the last replay the API ran (its candidate configuration, or the live one), per service and client region: weight changes, drains and flaps of the replay (run=replay) and of live steering over the same interval (run=live).",
			"service", "region", "run", "kind"),
		regret: m.gauge("meridian_steering_replay_regret_mean_milliseconds",
			"Of the last replay the API ran, per service and client region: its mean regret over the interval's ticks.",
			"service", "region"),
		differences: m.gauge("meridian_steering_replay_differences",
			"Decisions of the last replay the API ran that live steering did not make alike (0: the replay equals live); candidate is true when it ran a candidate configuration. Absent until a replay ran.",
			"candidate"),
	}
}

// set replaces the gauges with res: groups of an earlier replay do not linger.
func (g replayGauges) set(res *ReplayResult) {
	g.changes.Reset()
	g.regret.Reset()
	g.differences.Reset()
	for _, s := range res.Summary {
		for run, v := range map[string][3]int{"replay": {s.WeightChanges, s.Drains, s.Flaps}, "live": {s.LiveWeightChanges, s.LiveDrains, s.LiveFlaps}} {
			g.changes.WithLabelValues(s.Service, s.Region, run, "weight_changes").Set(float64(v[0]))
			g.changes.WithLabelValues(s.Service, s.Region, run, "drains").Set(float64(v[1]))
			g.changes.WithLabelValues(s.Service, s.Region, run, "flaps").Set(float64(v[2]))
		}
		g.regret.WithLabelValues(s.Service, s.Region).Set(s.RegretMeanMs)
	}
	g.differences.WithLabelValues(strconv.FormatBool(res.Candidate)).Set(float64(len(res.Differences)))
}
