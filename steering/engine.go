package steering

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/collectors/geodns"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/steering/pick"
)

// DefaultRegion is the client region of clients that match no configured region (unless
// the inventory defines a region of that name). It may use every POP of a service.
const DefaultRegion = "default"

// Causes of a weight change, as recorded in pipeline.SteeringDecision.Cause.
const (
	CauseHealth   = "health"
	CauseSLO      = "slo"
	CauseRTT      = "rtt"
	CauseOverride = "override"
	CauseFailOpen = "failopen"
	CauseRestore  = "restore"
)

// Weight is the current weight of one POP for one service and client region.
type Weight struct {
	Service string    `json:"service"`
	Region  string    `json:"region"`
	POP     string    `json:"pop"`
	Weight  float64   `json:"weight"`
	Target  float64   `json:"target"` // where the ramp is heading
	Cause   string    `json:"cause"`
	Reason  string    `json:"reason"`
	Since   time.Time `json:"since"` // last change
	// RegretMs is the region's regret for the service as of the last tick (see README,
	// "Regret"), the same on each of the group's weights.
	RegretMs float64 `json:"regret_ms"`
}

// Weights is a consistent snapshot of every weight, sorted by service, region, POP.
type Weights struct {
	Time    time.Time `json:"time"`
	Entries []Weight  `json:"entries"`
}

// key identifies one weight.
type key struct{ svc, region, pop string }

// groupKey identifies one answer set: a service as seen from a client region.
type groupKey struct{ svc, region string }

type entry struct {
	w, target     float64
	cause, reason string
	since         time.Time // last change
	heldAt        time.Time // last tick with an emergency drain target: restore waits MinHold after it
	held          target    // that drain, whose cause and reason stand while the hold lasts
	lastStep      time.Time
}

type group struct {
	svc        inventory.Service // Name canonical: lower case, fully qualified, as DNS matches it
	region     inventory.ClientRegion
	candidates []string // service POPs allowed for the region, in service order
	pool       []string // eligible POPs the ranking chose among last
	chosen     []string // POPs the RTT ranking chose last
	proposed   []string // a different choice RTT has wanted since proposedAt
	proposedAt time.Time
	regret     float64          // ms, as of the last tick (regret.go)
	regretG    prometheus.Gauge // meridian_steering_regret_milliseconds of the group
	demand     float64          // sessions per second its clients open, as estimated (capacity.go)
	implicit   bool             // the DefaultRegion the inventory does not name
	estimated  time.Time        // when demand was last estimated
	demandG    prometheus.Gauge
}

// Engine turns probe, SLO and override state into weights, one tick at a time. It is
// safe for concurrent use: Consume runs on the pipeline's goroutine, Answers on DNS
// workers, the API on HTTP handlers.
type Engine struct {
	cfg Config
	// inv is the world decisions read. It changes only at a tick boundary (follow), on
	// Tick's goroutine and under mu: other goroutines read it under mu.
	inv     *inventory.Inventory
	live    inventory.View // where inv's changes come from; nil: fixed
	applied uint64         // the live snapshot version last tried
	// followed is told each snapshot the engine applied, once the tick that applied it
	// has built its answer table: the DNS tables and RFC 2136 names follow (steering.go).
	followed func(*inventory.Snapshot)

	invRefused *prometheus.CounterVec // inventory versions refused, by part
	invVersion *prometheus.GaugeVec   // inventory version each part follows
	app        pipeline.Appender
	alerts     alerts.Source
	log        *slog.Logger
	now        func() time.Time

	matrix    *geodns.Matrix
	overrides *overrideSet
	history   History // where /api/steering/replay reads; nil: no replay
	load      LoadSource
	front     *frontDoor
	replaying bool // a replay's engine: it builds no DNS answer sets

	mu      sync.Mutex
	groups  []*group
	regions []string // client region names, DefaultRegion included
	entries map[key]*entry
	down    map[string]bool // POPs the health quorum drained, as of the last tick
	probes  *probeState     // what gates recovery (recovery.go)
	// popChanged is when a weight to each POP last changed, but for a first tick's: its
	// load reflects the weights only Shed.Settle later (capacity.go).
	popChanged map[string]time.Time

	table atomic.Pointer[map[groupKey]*pick.Set]

	weight    *prometheus.GaugeVec
	decisions *prometheus.CounterVec
	popDown   *prometheus.GaugeVec
	refused   *prometheus.CounterVec // override requests refused, by reason
	regret    *prometheus.GaugeVec
	utilG     *prometheus.GaugeVec
	headroomG *prometheus.GaugeVec
	demandG   *prometheus.GaugeVec

	loads       map[string]POPLoad // the last valid load of each POP; Tick's goroutine only
	lastTick    time.Time          // the previous tick: what a tick's loads stand for starts there (capacity.go)
	loadWarned  map[string]bool    // reason and POP of ignored loads already logged
	loadIgnored *prometheus.CounterVec
	replayed    replayGauges // the last replay the API ran, against live

	inputs  inputsLog         // what the last ticks read, for SteeringInputs records; Tick's goroutine only
	pending []pipeline.Record // records the pipeline has not accepted yet; Tick's goroutine only
}

// NewEngine builds the weight engine and runs its first tick; alertSrc may be nil (no
// SLO input).
func NewEngine(cfg Config, inv *inventory.Inventory, app pipeline.Appender, alertSrc alerts.Source, log *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	e, err := newEngine(cfg, inv, app, alertSrc, log, reg)
	if err != nil {
		return nil, err
	}
	e.Tick(context.Background())
	return e, nil
}

// newEngine builds an engine that has not ticked yet: a replay feeds it recorded inputs.
func newEngine(cfg Config, inv *inventory.Inventory, app pipeline.Appender, alertSrc alerts.Source, log *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	m := &metricSet{reg: reg}
	e := &Engine{
		cfg: cfg, inv: inv, app: app, alerts: alertSrc, log: log, now: time.Now,
		matrix: geodns.NewMatrix(), entries: map[key]*entry{}, down: map[string]bool{}, probes: newProbeState(),
		popChanged: map[string]time.Time{}, loads: map[string]POPLoad{}, loadWarned: map[string]bool{},
		weight: m.gauge("meridian_steering_weight",
			"Current steering weight of a POP for a service and client region (0 = drained).",
			"service", "region", "pop"),
		decisions: m.counter("meridian_steering_decisions_total",
			"Weight changes made, by cause.",
			"cause"),
		popDown: m.gauge("meridian_steering_pop_down",
			"1 when a quorum of vantages sees the POP failing.",
			"pop"),
		refused: m.counter("meridian_steering_override_requests_refused_total",
			"Steering API requests refused: a malformed override body (body), an override the inventory or limits refuse (override), a replay's bad interval or candidate configuration (replay).",
			"reason"),
		regret: m.gauge("meridian_steering_regret_milliseconds",
			"RTT from a client region's vantage to the POPs it is answered with (weighted) minus the RTT to the best healthy POP its residency allows.",
			"service", "region"),
		utilG: m.gauge("meridian_steering_pop_utilisation_ratio",
			"Measured load of a POP over its inventory capacity (new sessions per second); no series while unknown.",
			"pop"),
		headroomG: m.gauge("meridian_steering_pop_headroom_sessions_per_second",
			"A POP's capacity times the high shed watermark minus its measured load, in new sessions per second (negative above the watermark).",
			"pop"),
		demandG: m.gauge("meridian_steering_region_demand_sessions_per_second",
			"New sessions per second a client region opens to a service, as estimated from the POPs' loads and the weights that split them.",
			"service", "region"),
		loadIgnored: m.counter("meridian_steering_load_ignored_total",
			"POP loads the load source gave that steering ignored: unknown_pop (not in the inventory), invalid (negative or non-finite rate, no time).",
			"reason"),
		invRefused: m.counter("meridian_steering_inventory_refused_total",
			"Live inventory versions a part of steering refused, keeping its last good table: engine (groups), dns (the built-in GeoDNS's zone and client regions), rfc2136 (the published names). The log names each bad entry.",
			"part"),
		invVersion: m.gauge("meridian_steering_inventory_version",
			"Live inventory version each part of steering (engine, dns, rfc2136) follows now.",
			"part"),
		replayed: newReplayGauges(m),
	}
	if m.err != nil {
		return nil, m.err
	}
	// Every POP's gauge exists from the start at 0, so "POPs down" reads 0, not nothing.
	for _, p := range inv.POPs {
		e.popDown.WithLabelValues(p.Name).Set(0)
	}
	ov, err := newOverrideSet(cfg.Overrides, inv)
	if err != nil {
		return nil, err
	}
	e.overrides = ov
	e.front = newFrontDoor()
	e.load = LoadFunc(e.frontDoorLoad)
	if err := e.buildGroups(); err != nil {
		return nil, err
	}
	return e, nil
}

// metricSet makes steering's metric vectors and registers them on reg; the first
// registration error is kept for the constructor to return.
type metricSet struct {
	reg prometheus.Registerer
	err error
}

func (m *metricSet) gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	return register(m, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels))
}

func (m *metricSet) counter(name, help string, labels ...string) *prometheus.CounterVec {
	return register(m, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
}

func register[C prometheus.Collector](m *metricSet, c C) C {
	if m.err == nil {
		if err := m.reg.Register(c); err != nil {
			m.err = fmt.Errorf("steering metrics: %w", err)
		}
	}
	return c
}

// buildGroups makes e.groups and e.regions anew from e.inv: every service as seen from
// every client region, with its candidate POPs.
func (e *Engine) buildGroups() error {
	e.groups, e.regions = nil, nil
	regions := slices.Clone(e.inv.ClientRegions)
	if !slices.ContainsFunc(regions, func(r inventory.ClientRegion) bool { return r.Name == DefaultRegion }) {
		regions = append(regions, inventory.ClientRegion{Name: DefaultRegion})
	}
	for i, r := range regions {
		e.regions = append(e.regions, r.Name)
		if r.Vantage != "" {
			if _, ok := e.inv.Site(r.Vantage); !ok {
				return fmt.Errorf("inventory.client_regions %q: unknown vantage site %q", r.Name, r.Vantage)
			}
		}
		for _, svc := range e.inv.Services {
			svc.Name = dns.CanonicalName(svc.Name)
			g := &group{svc: svc, region: r, regretG: e.regret.WithLabelValues(svc.Name, r.Name), demandG: e.demandG.WithLabelValues(svc.Name, r.Name),
				implicit: i >= len(e.inv.ClientRegions)}
			for _, p := range svc.POPs {
				if len(r.AllowedPOPs) == 0 || slices.Contains(r.AllowedPOPs, p) {
					g.candidates = append(g.candidates, p)
				}
			}
			// A region whose residency excludes every POP of a service gets no answer for
			// it: an empty answer is better than data leaving its jurisdiction.
			e.groups = append(e.groups, g)
		}
	}
	return nil
}

// Consume folds probe records into the vantage × POP matrix, and HAProxy frontend
// records into the front door's POP loads (frontdoor.go).
func (e *Engine) Consume(recs []pipeline.Record) {
	for _, r := range recs {
		switch r := r.(type) {
		case *pipeline.Probe:
			e.matrix.Observe(r)
		case *pipeline.HAProxyStat:
			e.front.observe(r)
		}
	}
}

// Matrix is the engine's vantage × POP view, fed by every vantage's probe records.
func (e *Engine) Matrix() *geodns.Matrix { return e.matrix }

// Answers returns the weighted POP set for a service (lower case, fully qualified) and
// client region, for the DNS answer path; an unknown region gets the default region's
// set; nil when the service is unknown.
func (e *Engine) Answers(service, region string) *pick.Set {
	t := e.table.Load()
	if t == nil {
		return nil
	}
	if region == "" {
		region = DefaultRegion // one map lookup, not two, for the clients no region names
	}
	if s, ok := (*t)[groupKey{service, region}]; ok {
		return s
	}
	return (*t)[groupKey{service, DefaultRegion}]
}

// ApplyOverrides makes list the drains and pins from the configuration
// (steering.overrides), as a reload does; those set through the API stay. The next tick
// applies them. On error nothing changes.
func (e *Engine) ApplyOverrides(list []Override) error { return e.overrides.replaceConfig(list) }

// Weights returns a snapshot of every weight.
func (e *Engine) Weights() Weights {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := Weights{Time: e.now()}
	regret := make(map[groupKey]float64, len(e.groups))
	for _, g := range e.groups {
		regret[groupKey{g.svc.Name, g.region.Name}] = g.regret
	}
	for k, en := range e.entries {
		out.Entries = append(out.Entries, Weight{Service: k.svc, Region: k.region, POP: k.pop, Weight: en.w, Target: en.target, Cause: en.cause, Reason: en.reason, Since: en.since,
			RegretMs: regret[groupKey{k.svc, k.region}]})
	}
	slices.SortFunc(out.Entries, func(a, b Weight) int {
		return strings.Compare(a.Service+"\x00"+a.Region+"\x00"+a.POP, b.Service+"\x00"+b.Region+"\x00"+b.POP)
	})
	return out
}

// run ticks until ctx ends.
func (e *Engine) run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.Tick(ctx)
		}
	}
}

// target is what a weight should be now, before ramps and holds.
type target struct {
	w             float64
	cause, reason string
	emergency     bool // drains at once instead of ramping down
}

// Tick reads the engine's inputs, decides every weight once from them, and records the
// inputs and each change.
func (e *Engine) Tick(ctx context.Context) {
	snap := e.follow()
	in := e.gather()
	recs := e.decide(in)
	if snap != nil && e.followed != nil {
		e.followed(snap) // after decide: the answer table has the new groups' sets
	}
	e.record(ctx, append([]pipeline.Record{e.inputs.record(in)}, recs...))
}

// decide recomputes every weight from one tick's inputs. It reads nothing else but the
// engine's own state (holds, ramps, RTT choices), so the same inputs from the same state
// give the same decisions: replay relies on it. Decisions come sorted by service, region
// and POP.
func (e *Engine) decide(in Inputs) []pipeline.Record {
	now := in.Now
	since := now.Add(-e.cfg.Stale)
	cells := make([]geodns.Cell, 0, len(in.Cells))
	for _, c := range in.Cells {
		if !c.LastSeen.Before(since) {
			cells = append(cells, c)
		}
	}
	health := geodns.HealthOf(cells, e.cfg.FailThreshold, e.cfg.Quorum)
	rtt := map[[2]string]time.Duration{} // vantage, POP -> fresh smoothed RTT
	for _, c := range cells {
		if c.RTT > 0 && now.Sub(c.LastOK) < e.cfg.Stale {
			rtt[[2]string{c.Vantage, c.POP}] = c.RTT
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	var decisions []pipeline.Record
	e.probes.observe(cells, e.cfg.FailThreshold, now)
	pages, tickets := e.alertState(in.Alerts)
	for pop := range e.down {
		if !health[pop].Down {
			delete(e.down, pop)
			e.popDown.WithLabelValues(pop).Set(0)
		}
	}
	for pop, h := range health {
		if h.Down && !e.down[pop] {
			e.down[pop] = true
			e.popDown.WithLabelValues(pop).Set(1)
			e.log.Warn("POP down by probe quorum", "pop", pop, "failing_vantages", h.Failing, "vantages", h.Vantages)
		}
	}
	targets := make([]map[string]target, len(e.groups))
	for i, g := range e.groups {
		targets[i] = e.targets(g, now, health, rtt, pages, tickets, in.Overrides)
	}
	views := e.viewPOPs(now, in.Load)
	e.estimateDemand(now, views)
	e.shape(views, targets, tickets)
	e.showCapacity(views)
	table := map[groupKey]*pick.Set{}
	for i, g := range e.groups {
		recs := e.step(g, targets[i], now)
		g.regret = e.regretOf(g, health, pages, rtt)
		g.regretG.Set(g.regret)
		for _, r := range recs {
			d := r.(*pipeline.SteeringDecision)
			d.RegretMs = g.regret
			d.Utilisation, d.Headroom = views[d.POP].utilisation(), views[d.POP].headroom(e.cfg.Shed.High)
		}
		decisions = append(decisions, recs...)
		if !e.replaying {
			table[groupKey{g.svc.Name, g.region.Name}] = e.set(g)
		}
	}
	e.table.Store(&table)
	slices.SortStableFunc(decisions, func(a, b pipeline.Record) int {
		x, y := a.(*pipeline.SteeringDecision), b.(*pipeline.SteeringDecision)
		return cmp.Or(strings.Compare(x.Service, y.Service), strings.Compare(x.ClientRegion, y.ClientRegion), strings.Compare(x.POP, y.POP))
	})
	return decisions
}

// maxPending bounds the decisions kept while the pipeline refuses them.
const maxPending = 10000

// record appends a tick's inputs and decisions, with any the pipeline refused before
// (the first tick runs before the pipeline has started; a full spool pushes back).
// Refused ones wait for the next tick, so the logs have no gaps.
func (e *Engine) record(ctx context.Context, decisions []pipeline.Record) {
	if e.app == nil {
		return
	}
	e.pending = append(e.pending, decisions...)
	if len(e.pending) == 0 {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := e.app.Append(actx, e.pending...); err != nil {
		if over := len(e.pending) - maxPending; over > 0 {
			e.pending = e.pending[over:]
			e.log.Error("steering decisions and inputs lost: the pipeline refused them for too long", "n", over, "err", err)
		}
		return
	}
	e.pending = nil
}

func alertFor(m map[string]string, svc, pop string) (string, bool) {
	if n, ok := m[pop]; ok {
		return n, true
	}
	n, ok := m[svc+"\x00"+pop]
	return n, ok
}

// targets decides each candidate's target weight for one group.
func (e *Engine) targets(g *group, now time.Time, health map[string]geodns.POPHealth, rtt map[[2]string]time.Duration, pages, tickets map[string]string, overrides []Override) map[string]target {
	out := map[string]target{}
	eligible := []string{}
	held := map[string]target{} // held POPs' targets but for the hold
	pinned := pinnedBy(overrides, g.svc.Name, g.region.Name, g.candidates)
	for _, p := range g.candidates {
		base := e.baseWeight(p)
		t := target{w: base}
		switch {
		case len(pinned) > 0 && !slices.Contains(pinned, p):
			t = target{0, CauseOverride, "manual pin to " + strings.Join(pinned, ","), true}
		case len(pinned) > 0:
			t = target{base, CauseOverride, "manual pin", false}
		case drainedBy(overrides, g.svc.Name, g.region.Name, p):
			t = target{0, CauseOverride, "manual drain", true}
		case health[p].Down:
			h := health[p]
			t = target{0, CauseHealth, fmt.Sprintf("%d of %d vantages see %d+ consecutive probe failures", h.Failing, h.Vantages, e.cfg.FailThreshold), true}
		default:
			if name, ok := alertFor(pages, g.svc.Name, p); ok {
				t = target{0, CauseSLO, "page-severity SLO burn " + name, true}
			} else if name, ok := alertFor(tickets, g.svc.Name, p); ok {
				t = target{base * e.cfg.TicketFactor, CauseSLO, "ticket-severity SLO burn " + name, false}
			}
		}
		if en := e.entries[key{g.svc.Name, g.region.Name, p}]; en != nil && len(pinned) == 0 {
			// Hold: a drained POP stays out until its drain's cause has been gone for
			// MinHold, counted from the cause's end, not its start, so that a POP that
			// answers again serves again only once it has kept answering.
			switch {
			case t.emergency:
				en.heldAt, en.held = now, t
			case t.w > 0 && now.Sub(en.heldAt) < e.cfg.MinHold:
				held[p] = t
				t = target{0, en.held.cause, fmt.Sprintf("held for %s after: %s", e.cfg.MinHold, en.held.reason), false}
			}
		}
		if t.w > 0 {
			eligible = append(eligible, p)
		}
		out[p] = t
	}
	if len(eligible) == 0 && len(held) > 0 {
		// A POP that answers again, though not yet for MinHold, beats failing open to
		// POPs that do not answer at all.
		for _, p := range g.candidates {
			if t, ok := held[p]; ok {
				out[p] = target{t.w, t.cause, "last resort, cut short a hold: " + t.reason, false}
				eligible = append(eligible, p)
			}
		}
	}
	if len(eligible) == 0 {
		// Fail open inside the allowed set: answering with a sick POP beats answering
		// nothing, and residency still holds because only candidates are served.
		for _, p := range g.candidates {
			out[p] = target{e.baseWeight(p), CauseFailOpen, "every allowed POP is unhealthy; serving all of them", false}
		}
		return out
	}
	if len(pinned) > 0 {
		return out
	}
	chosen := e.rank(g, eligible, rtt, now)
	for _, p := range eligible {
		t := out[p]
		switch {
		case !slices.Contains(chosen, p):
			t = target{0, CauseRTT, "a nearer healthy POP serves this region", false}
		case t.cause == "":
			t.cause, t.reason = CauseRTT, "among the nearest healthy POPs"
		}
		out[p] = t
	}
	return out
}

// rank updates g.chosen: the eligible POPs whose cost is within RTTSlack of the best,
// preferring the region's preferred POPs while any is eligible. Against RTT noise, the
// band has hysteresis (a POP joins RTTHysteresis inside it and leaves RTTHysteresis
// outside it) and a change applies only after RTTDwell of wanting the same change. When
// the eligible pool changes (health, alerts, overrides, the end of a hold) the choice is
// made again at once, without hysteresis: that is not noise, detection-to-steer must
// stay fast, and a healed POP must get its traffic back as it had it before.
func (e *Engine) rank(g *group, eligible []string, rtt map[[2]string]time.Duration, now time.Time) []string {
	pool := eligible
	if pref := filter(g.region.Preferred, eligible); len(pref) > 0 {
		pool = pref
	}
	cost := map[string]float64{}
	best := math.Inf(1)
	for _, p := range pool {
		cost[p] = e.cost(g.region, p, rtt)
		best = min(best, cost[p])
	}
	limit := best*(1+e.cfg.RTTSlack) + 1e-9
	settled := slices.Equal(pool, g.pool)
	band := func(hysteresis bool) []string {
		return slices.DeleteFunc(slices.Clone(pool), func(p string) bool {
			switch {
			case !hysteresis:
				return cost[p] > limit
			case slices.Contains(g.chosen, p):
				return cost[p] > limit*(1+e.cfg.RTTHysteresis)
			default:
				return cost[p]*(1+e.cfg.RTTHysteresis) > limit
			}
		})
	}
	want := band(settled)
	if len(want) == 0 { // every serving POP left, and none is far enough inside to join
		want = band(false)
	}
	switch {
	case !settled:
		g.chosen, g.pool, g.proposed = want, pool, nil
	case slices.Equal(want, g.chosen):
		g.proposed = nil
	case !slices.Equal(want, g.proposed):
		g.proposed, g.proposedAt = want, now
	case now.Sub(g.proposedAt) >= e.cfg.RTTDwell:
		g.chosen, g.proposed = want, nil
	}
	return g.chosen
}

func filter(list, keep []string) []string {
	var out []string
	for _, p := range list {
		if slices.Contains(keep, p) {
			out = append(out, p)
		}
	}
	return out
}

// cost estimates the region's RTT to a POP in milliseconds: measured from the region's
// vantage when fresh, else from great-circle distance (light in fibre covers about
// 100 km per millisecond of round trip). Without a vantage every POP costs the same.
func (e *Engine) cost(r inventory.ClientRegion, pop string, rtt map[[2]string]time.Duration) float64 {
	if r.Vantage == "" {
		return 0
	}
	if d, ok := rtt[[2]string{r.Vantage, pop}]; ok {
		return float64(d) / float64(time.Millisecond)
	}
	vs, _ := e.inv.Site(r.Vantage)
	p, ok := e.inv.POP(pop)
	if !ok {
		return math.Inf(1)
	}
	ps, ok := e.inv.Site(p.Site)
	if !ok {
		return math.Inf(1)
	}
	return haversineKm(vs.Lat, vs.Lon, ps.Lat, ps.Lon) / 100
}

func haversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Sqrt(a))
}

func (e *Engine) baseWeight(pop string) float64 {
	if p, ok := e.inv.POP(pop); ok && p.BaseWeight > 0 {
		return p.BaseWeight
	}
	return 1
}

// step moves each weight of a group toward its target: emergency drains at once,
// everything else by at most RampStep × base per RampInterval.
func (e *Engine) step(g *group, targets map[string]target, now time.Time) []pipeline.Record {
	var recs []pipeline.Record
	change := func(p string, en *entry, w float64, t target) {
		if w == en.w && t.cause == en.cause {
			return
		}
		old := en.w
		en.target = t.w
		en.cause, en.reason = t.cause, t.reason
		if w == old {
			return // same weight, new explanation: not a decision
		}
		if !en.since.IsZero() {
			e.popChanged[p] = now
		}
		en.w, en.since = w, now
		e.weight.WithLabelValues(g.svc.Name, g.region.Name, p).Set(w)
		e.decisions.WithLabelValues(t.cause).Inc()
		recs = append(recs, &pipeline.SteeringDecision{
			M:       pipeline.Meta{Time: now, Collector: "steering"},
			Service: g.svc.Name, ClientRegion: g.region.Name, POP: p,
			OldWeight: old, NewWeight: w, Cause: t.cause, Reason: t.reason,
		})
	}
	serving := 0
	for _, p := range g.candidates {
		t := targets[p]
		k := key{g.svc.Name, g.region.Name, p}
		en := e.entries[k]
		if en == nil {
			// First sight: start at the target, nothing to ramp from.
			en = &entry{lastStep: now}
			e.entries[k] = en
			change(p, en, t.w, t)
			en.target = t.w
			if en.w > 0 {
				serving++
			}
			continue
		}
		en.target = t.w
		w := en.w
		// Coming back from what lowered a weight (not an RTT choice) is a restore until
		// the target is reached, so that cause rtt counts only what RTT decided.
		if t.w > w && t.cause != CauseFailOpen && slices.Contains([]string{CauseHealth, CauseSLO, CauseOverride, CauseRestore}, en.cause) {
			t.cause, t.reason = CauseRestore, "ramping up: "+t.reason
		}
		switch {
		case t.w < w && t.emergency, t.w != w && t.emergency && t.cause == CauseCapacity:
			// A POP about to be pushed over its high watermark cannot wait for ramps,
			// neither to shed nor to take what it sheds elsewhere.
			w = t.w
		case t.w != w && now.Sub(en.lastStep) >= e.cfg.RampInterval:
			stepSize := e.cfg.RampStep * e.baseWeight(p)
			if t.w > w {
				w = min(t.w, w+stepSize)
			} else {
				w = max(t.w, w-stepSize)
			}
			en.lastStep = now
		}
		change(p, en, w, t)
		if en.w > 0 {
			serving++
		}
	}
	if serving == 0 {
		// Holds and ramps must never leave a region with nothing to answer.
		for _, p := range g.candidates {
			if t := targets[p]; t.w > 0 {
				change(p, e.entries[key{g.svc.Name, g.region.Name, p}], t.w, target{t.w, t.cause, "last resort, no POP serving: " + t.reason, false})
			}
		}
	}
	return recs
}

// set builds the answer set of a group from its current weights.
func (e *Engine) set(g *group) *pick.Set {
	var cs []pick.Choice
	for _, p := range g.candidates {
		en := e.entries[key{g.svc.Name, g.region.Name, p}]
		pop, _ := e.inv.POP(p)
		c := pick.Choice{POP: p, Weight: en.w}
		for _, v := range pop.VIPs {
			if v = v.Unmap(); v.Is4() {
				c.V4 = append(c.V4, v)
			} else {
				c.V6 = append(c.V6, v)
			}
		}
		cs = append(cs, c)
	}
	return pick.NewSet(cs)
}
