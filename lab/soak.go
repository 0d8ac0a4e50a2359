package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meridianhq/meridian/alerts/slo"
)

// SoakConfig drives `meridian lab soak`: the lab's scripted schedule against a running
// Meridian, checked through Meridian's own APIs.
type SoakConfig struct {
	Duration time.Duration // the whole schedule; phases scale with it (soakPhases)
	Meridian string        // Meridian's base URL, e.g. http://127.0.0.1:9470
	Token    string        // Meridian's API token (also the map's)
	// Resources samples the process Meridian runs in: RSS, live Go heap, the active parts
	// of each table.
	Resources func(context.Context) (Resources, error)
	// Query runs SQL on Meridian's store (TSV out); Database holds its tables. Timings
	// that need the records' own times (detection to steer) are read there.
	Query    func(ctx context.Context, sql string) ([]byte, error)
	Database string
	Log      *slog.Logger
	// ProbeRTTDegraded is the map's probe_rtt_degraded: a probe slower than it is drawn
	// degraded.
	ProbeRTTDegraded time.Duration
	// WarmedUp, when set, runs once as the warm-up ends: a heap profile taken there is
	// the base to diff the final one against.
	WarmedUp func()
}

// Resources is one sample of what must stay bounded.
type Resources struct {
	RSS, Heap float64            // bytes
	Engine    float64            // bytes the embedded engine tracks (its MemoryTracking), to tell its share of RSS
	Caches    map[string]float64 // bytes in each of the engine's caches (its *CacheBytes metrics), part of Engine
	Parts     map[string]int     // table -> active parts
}

// Budgets of the soak's invariants (DESIGN.md decision 7, issue 16).
const (
	budgetDetectToSteerP50 = 1.5 // s
	budgetDetectToSteerP99 = 3.0 // s
	budgetPageFires        = 120.0
	budgetFullWeight       = 120.0 // s from the POP answering probes again
	budgetGrowth           = 5.0   // MB per hour, RSS and heap each
	budgetParts            = 150   // active parts of one table: ClickHouse's parts_to_delay_insert
	// minGrowthWindow is the shortest post-warm-up window whose growth is judged: within
	// the first half hour bounded buffers are still filling (the map's delta history, the
	// ruler's head chunks, the engine's caches), which a regression cannot tell from a
	// leak. Shorter soaks report the slope without judging it.
	minGrowthWindow   = 30 * time.Minute
	soakCheckEvery    = time.Second
	soakResourceEvery = 5 * time.Second
	soakSourcesEvery  = 15 * time.Second
	// soakMapLag is how far the map's edge may trail the newest stored record it is drawn
	// from: its 1 s update budget, plus the scrape of the next record.
	soakMapLag = 5 * time.Second
)

// budgetPageResolves is how long a page may still fire after its heal. The shipped SLOs
// page on the SRE workbook's windows (14.4× over 5m and 1h, or 6× over 30m and 6h) with
// no `for` and no keep_firing_for, so a page resolves once the last error has left the
// longer short window, the 6h pair's 30m (alerts/ruletests/pop.yml shows the edge); plus
// a minute for errors counted after the heal (a probe interval, a collector's scrape),
// the ruler's evaluation and the soak's check. A soak that ends sooner after the heal
// with the page still firing does not judge it.
var budgetPageResolves = func() float64 {
	ws := slo.GoogleWindows(30 * 24 * time.Hour) // the shipped specs' default period
	return (max(ws.PageQuick.ShortWindow, ws.PageSlow.ShortWindow) + time.Minute).Seconds()
}()

// soakPhase is one step of the schedule: a failure to inject (none: calm or heal) for a
// share of the duration.
type soakPhase struct {
	name    string
	fail    *Failure
	units   int  // of 60: the share of Duration
	calm    bool // the calm invariants hold (no alert firing, no weight change)
	still   bool // no weight changes (alerts may still be resolving along their windows)
	warmUp  bool
	healsOf string // the failure this heal ends
}

// The POP, tunnel and OSD the schedule fails.
var (
	soakPOP    = Failure{Kind: "pop", Target: "nuremberg", Mode: "down"}
	soakTunnel = Failure{Kind: "tunnel", Target: "newyork-nuremberg", Mode: "down"}
	soakOSD    = Failure{Kind: "osd", Target: "3", Mode: "slow"}
)

// soakPhases is calm → POP failure → heal → tunnel failure → heal → OSD slow → heal →
// calm. The heal after the POP gets the longest share: traffic must be back within
// budgetFullWeight (2 min), so it lasts 2.5 min even in the 10-minute soak.
func soakPhases() []soakPhase {
	return []soakPhase{
		{name: "warm-up", units: 12, warmUp: true},
		{name: "calm", units: 10, calm: true},
		{name: "fail pop nuremberg", fail: &soakPOP, units: 5},
		{name: "heal pop", units: 15, healsOf: "pop"},
		{name: "fail tunnel newyork-nuremberg", fail: &soakTunnel, units: 4},
		{name: "heal tunnel", units: 4, healsOf: "tunnel"},
		{name: "osd 3 slow", fail: &soakOSD, units: 4},
		{name: "heal osd", units: 3, healsOf: "osd"},
		{name: "calm again", units: 3, still: true},
	}
}

// SoakReport is what the soak measured, invariant by invariant.
type SoakReport struct {
	Duration time.Duration
	WarmUp   time.Duration
	Rows     []SoakRow
	Timeline []string // what happened when, seconds from the start
}

// SoakRow is one invariant: its budget, what was measured, and whether it held.
type SoakRow struct {
	Name, Invariant, Unit string
	Budget, Measured      float64
	Detail                string
	OK                    bool
}

// Failed lists the invariants that did not hold.
func (r *SoakReport) Failed() []string {
	var out []string
	for _, row := range r.Rows {
		if !row.OK {
			out = append(out, row.Invariant+": "+row.Detail)
		}
	}
	return out
}

// Write prints the report as a table, the timeline, and one BENCH line per invariant:
// BENCH <name> <value> <unit> ratio=<value/budget>.
func (r *SoakReport) Write(w io.Writer) {
	fmt.Fprintf(w, "soak: %s (warm-up %s)\n\n| invariant | budget | measured | |\n|---|---|---|---|\n", r.Duration, r.WarmUp)
	for _, row := range r.Rows {
		verdict := "ok"
		if !row.OK {
			verdict = "FAILED"
		}
		fmt.Fprintf(w, "| %s | %s %s | %s %s (%s) | %s |\n", row.Invariant, num(row.Budget), row.Unit, num(row.Measured), row.Unit, row.Detail, verdict)
	}
	fmt.Fprintln(w, "\ntimeline (s from start):")
	for _, t := range r.Timeline {
		fmt.Fprintln(w, "  "+t)
	}
	fmt.Fprintln(w)
	for _, row := range r.Rows {
		ratio := "0"
		switch {
		case row.Budget != 0:
			ratio = num(row.Measured / row.Budget)
		case row.Measured != 0:
			ratio = "inf"
		}
		fmt.Fprintf(w, "BENCH %s %s %s ratio=%s\n", row.Name, num(row.Measured), row.Unit, ratio)
	}
}

func num(v float64) string {
	if math.IsNaN(v) {
		return "NaN"
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

// soak is one run's state.
type soak struct {
	cfg   SoakConfig
	lab   *Lab
	http  *http.Client
	start time.Time

	mu             sync.Mutex
	timeline       []string
	phase          soakPhase
	lastW          map[string]float64 // weight per service/region/pop at the previous check
	calmW          map[string]float64 // weights before the first failure: "full weight"
	calmAlert      int                // most alerts firing at one calm check
	calmAlertNames map[string]bool
	calmMoves      []string // weight changes during calm phases
	mapBad         []string // map/API disagreements
	mapChecks      int
	sourceChecks   int      // comparisons of probe and tunnel edges with the store
	unknown        []string // elements unknown while observed
	resources      []resourceSample
	parts          map[string]int     // most active parts seen per table after warm-up
	fires          map[string]float64 // failure kind -> s from injection to its alert firing
	failedAt       map[string]time.Time
	healedAt       map[string]time.Time
	resolved       map[string]float64 // failure kind -> s from the heal to its page resolving
	fullAt         float64            // s from the POP heal to every weight back to its calm value
	osdSeen        float64            // s from the OSD failure to the map showing it
}

type resourceSample struct {
	t                 float64            // s since warm-up ended
	rss, heap, engine float64            // MB
	caches            map[string]float64 // MB
}

// Soak runs the schedule against Meridian at cfg.Meridian and returns the report. The
// returned error is for a run that could not be carried out; broken invariants are in
// the report (Failed).
func (l *Lab) Soak(ctx context.Context, cfg SoakConfig) (*SoakReport, error) {
	if cfg.Duration <= 0 {
		return nil, fmt.Errorf("lab soak: duration must be positive")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &soak{cfg: cfg, lab: l, http: &http.Client{Timeout: 10 * time.Second}, start: time.Now(),
		fires: map[string]float64{}, failedAt: map[string]time.Time{}, healedAt: map[string]time.Time{}, resolved: map[string]float64{},
		parts: map[string]int{}, calmAlertNames: map[string]bool{}, fullAt: math.NaN(), osdSeen: math.NaN()}
	phases := soakPhases()
	var warmUp time.Duration
	ends := make([]time.Time, len(phases))
	at := s.start
	for i, p := range phases {
		d := cfg.Duration * time.Duration(p.units) / 60
		if p.warmUp {
			warmUp = d
		}
		at = at.Add(d)
		ends[i] = at
	}
	checks := time.NewTicker(soakCheckEvery)
	defer checks.Stop()
	res := time.NewTicker(soakResourceEvery)
	defer res.Stop()
	sources := time.NewTicker(soakSourcesEvery)
	defer sources.Stop()
	for i, p := range phases {
		if i > 0 && phases[i-1].warmUp && cfg.WarmedUp != nil {
			cfg.WarmedUp()
		}
		s.enter(p)
		for time.Now().Before(ends[i]) {
			select {
			case <-ctx.Done():
				s.lab.state.Heal()
				return nil, ctx.Err()
			case <-checks.C:
				if err := s.check(ctx); err != nil {
					cfg.Log.Warn("soak check", "err", err)
				}
			case <-res.C:
				if !p.warmUp {
					s.sample(ctx, warmUp)
				}
			case <-sources.C:
				if !p.warmUp {
					if err := s.checkSources(ctx); err != nil {
						cfg.Log.Warn("soak check of the map's sources", "err", err)
					}
				}
			}
		}
	}
	s.lab.state.Heal()
	detect, err := s.detectToSteer(ctx)
	if err != nil {
		s.note("detection to steer: %v", err)
	}
	return s.report(warmUp, detect), nil
}

// detectToSteer reads, for each weight steering drained during the POP failure, the time
// from the first failed probe of that POP (detection: the first evidence Meridian had) to
// the decision, from the records' own times in the store.
func (s *soak) detectToSteer(ctx context.Context) ([]float64, error) {
	failed, healed := s.failedAt["pop"], s.healedAt["pop"]
	if s.cfg.Query == nil || failed.IsZero() || healed.IsZero() {
		return nil, fmt.Errorf("no store to read or no POP failure")
	}
	ts := func(t time.Time) string { return t.UTC().Format("'2006-01-02 15:04:05.000'") }
	db, pop := s.cfg.Database, soakPOP.Target
	q := fmt.Sprintf(`WITH (SELECT min(time) FROM %[1]s.probes WHERE pop = '%[2]s' AND method != 'dns' AND NOT success AND time >= %[3]s AND time < %[4]s) AS detected
SELECT (toUnixTimestamp64Milli(time) - toUnixTimestamp64Milli(detected)) / 1000 FROM %[1]s.steering_decisions
WHERE pop = '%[2]s' AND new_weight = 0 AND old_weight > 0 AND time >= %[3]s AND time < %[4]s ORDER BY time`, db, pop, ts(failed), ts(healed))
	out, err := s.cfg.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	var d []float64
	for _, line := range strings.Fields(string(out)) {
		var v float64
		if _, err := fmt.Sscan(line, &v); err != nil {
			return nil, fmt.Errorf("detection to steer: %q: %w", line, err)
		}
		d = append(d, v)
	}
	return d, nil
}

func (s *soak) since() float64 { return time.Since(s.start).Seconds() }

func (s *soak) note(format string, args ...any) {
	line := fmt.Sprintf("%7.1f  ", s.since()) + fmt.Sprintf(format, args...)
	s.timeline = append(s.timeline, line)
	s.cfg.Log.Info("soak: " + line)
}

// enter starts a phase: injects its failure, or heals the previous one.
func (s *soak) enter(p soakPhase) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase = p
	switch {
	case p.fail != nil:
		if err := s.lab.state.Fail(*p.fail); err != nil {
			s.note("phase %s: %v", p.name, err)
			return
		}
		s.failedAt[p.fail.Kind] = time.Now()
	case p.healsOf != "":
		s.lab.state.Heal()
		s.healedAt[p.healsOf] = time.Now()
	}
	s.note("phase %s", p.name)
}

func (s *soak) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", s.cfg.Meridian+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

type apiWeights struct {
	Entries []struct {
		Service, Region, POP string
		Weight               float64
	} `json:"entries"`
}

func (s *soak) weights(ctx context.Context) (map[string]float64, error) {
	var w apiWeights
	if err := s.get(ctx, "/api/steering/weights", &w); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, e := range w.Entries {
		out[e.Service+" "+e.Region+" "+e.POP] = e.Weight
	}
	return out, nil
}

type mapSnapshot struct {
	Nodes []struct{ ID, Kind, Status string } `json:"nodes"`
	Edges []struct {
		ID, Kind, Source, Target, Status string
		Metrics                          map[string]float64
		Attrs                            map[string]string
		Updated                          int64 // observation time, unix ms
	} `json:"edges"`
}

type apiAlerts struct {
	Data struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		} `json:"alerts"`
	} `json:"data"`
}

// check runs every invariant that is checked continuously.
func (s *soak) check(ctx context.Context) error {
	w1, err := s.weights(ctx)
	if err != nil {
		return err
	}
	var snap mapSnapshot
	if err := s.get(ctx, "/map/api/snapshot?token="+url.QueryEscape(s.cfg.Token), &snap); err != nil {
		return err
	}
	w2, err := s.weights(ctx)
	if err != nil {
		return err
	}
	var al apiAlerts
	if err := s.get(ctx, "/prometheus/api/v1/alerts", &al); err != nil {
		return err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.phase
	firing := map[string]bool{}
	for _, a := range al.Data.Alerts {
		if a.State == "firing" {
			firing[a.Labels["alertname"]+"{"+a.Labels["sloth_severity"]+","+labelsOf(a.Labels)+"}"] = true
		}
	}
	if !p.warmUp {
		s.checkMap(w1, w2, snap)
	}
	if p.calm {
		if len(firing) > s.calmAlert {
			s.calmAlert = len(firing)
		}
		for n := range firing {
			if !s.calmAlertNames[n] {
				s.calmAlertNames[n] = true
				s.note("calm: alert firing %s", n)
			}
		}
	}
	if p.calm || p.still {
		for k, v := range w2 {
			if old, ok := s.lastW[k]; ok && old != v {
				s.calmMoves = append(s.calmMoves, fmt.Sprintf("%s %g→%g", k, old, v))
				s.note("%s: weight %s %g → %g", p.name, k, old, v)
			}
		}
	}
	if p.calm || p.warmUp {
		s.calmW = w2
	}
	s.lastW = w2
	s.failureChecks(now, w2, firing, snap)
	return nil
}

// labelsOf names an alert's target: the labels that tell one alert of a rule from another.
func labelsOf(l map[string]string) string {
	var parts []string
	for _, k := range []string{"pop", "service", "site", "peer_site", "cluster", "namespace"} {
		if v := l[k]; v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, ",")
}

// mapWrong notes a disagreement of the map with its sources (the first 20 in the timeline).
func (s *soak) mapWrong(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if len(s.mapBad) < 20 {
		s.note("map: %s", msg)
	}
	s.mapBad = append(s.mapBad, msg)
}

// checkMap compares the map with the steering API: every steer edge (the POP labels'
// weights are read from them) has the API's weight, now or at the previous check (the
// map's 1 s update budget), and the status that weight means, and nothing the API
// reports is missing or unknown on the map. Checks where the API
// changed between the two reads around the snapshot are skipped: they compare a moving
// target, not the map.
func (s *soak) checkMap(w1, w2 map[string]float64, snap mapSnapshot) {
	if !sameWeights(w1, w2) {
		return
	}
	s.mapChecks++
	seen := map[string]bool{}
	bad := s.mapWrong
	for _, e := range snap.Edges {
		if e.Kind != "steer" {
			continue
		}
		region, pop := strings.TrimPrefix(e.Source, "region:"), strings.TrimPrefix(e.Target, "pop:")
		k := e.Attrs["service"] + " " + region + " " + pop
		want, ok := w2[k]
		if !ok {
			continue // a region-POP pair steering no longer weighs: the map may keep it until it expires
		}
		seen[k] = true
		got := e.Metrics["weight"]
		// The map may be one check behind (its 1 s update budget): the previous check's
		// weight is also its truth.
		if prev, ok := s.lastW[k]; ok && got == prev && got != want {
			want = prev
		}
		if got != want {
			bad("%s weight %g on the map, %g from /api/steering/weights", k, got, want)
		}
		if st := steerStatus(want); e.Status != st {
			if e.Status == "unknown" {
				s.unknown = append(s.unknown, "steer "+k)
			}
			bad("%s status %s on the map, weight %g means %s", k, e.Status, want, st)
		}
	}
	for k := range w2 {
		if !seen[k] {
			bad("%s has a weight in /api/steering/weights but no steer edge on the map", k)
		}
	}
}

// sourceEdge is what the store's newest records say an edge of the map must show.
type sourceEdge struct {
	updated int64 // unix ms of the newest record
	status  string
}

// checkSources compares the map's probe and tunnel edges with the records they are drawn
// from, read back from the store. An edge whose observation time is the newest stored
// record's must have that record's status (a tunnel: the worse of its two ends' newest);
// an edge the store has newer records for by more than soakMapLag is behind; an edge
// unknown while its source reports, or missing, is wrong. Records the map has and the
// store has not yet (the pipeline's flush) are compared at a later check.
func (s *soak) checkSources(ctx context.Context) error {
	if s.cfg.Query == nil {
		return nil
	}
	// Only records the map could have had when it answered count: the queries run after
	// the snapshot, and on a loaded machine newer records land meanwhile.
	asOf := time.Now().UnixMilli()
	var snap mapSnapshot
	if err := s.get(ctx, "/map/api/snapshot?token="+url.QueryEscape(s.cfg.Token), &snap); err != nil {
		return err
	}
	db := s.cfg.Database
	want := map[string]sourceEdge{}
	rows, err := s.rows(ctx, fmt.Sprintf(`SELECT concat('probe:', vantage, '->', pop, '/', method), toUnixTimestamp64Milli(max(time)),
  if(argMax(success, time), if(argMax(rtt, time) > %d, 'degraded', 'ok'), 'down')
FROM %s.probes WHERE time > now64(3) - INTERVAL 1 MINUTE AND time <= fromUnixTimestamp64Milli(%d) AND method != 'dns' AND pop != '' GROUP BY vantage, pop, method`, s.cfg.ProbeRTTDegraded.Nanoseconds(), db, asOf))
	if err != nil {
		return err
	}
	for _, r := range rows {
		want[r[0]] = sourceEdge{updated: atoi(r[1]), status: r[2]}
	}
	rows, err = s.rows(ctx, fmt.Sprintf(`SELECT node, peer_node, toUnixTimestamp64Milli(max(time)), argMax(status, time)
FROM %s.tunnel_stats WHERE time > now64(3) - INTERVAL 1 MINUTE AND time <= fromUnixTimestamp64Milli(%d) AND node != '' AND peer_node != '' GROUP BY node, peer_node`, db, asOf))
	if err != nil {
		return err
	}
	for _, r := range rows {
		a, b := "node:"+r[0], "node:"+r[1]
		if b < a {
			a, b = b, a
		}
		id := "tunnel:" + a + "|" + b
		w, t := want[id], atoi(r[2])
		w.updated = max(w.updated, t)
		if severity[r[3]] > severity[w.status] {
			w.status = r[3]
		}
		want[id] = w
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sourceChecks++
	seen := map[string]bool{}
	for _, e := range snap.Edges {
		w, ok := want[e.ID]
		if !ok {
			continue // nothing stored in the last minute: the edge may be ageing out
		}
		seen[e.ID] = true
		switch {
		case e.Status == "unknown":
			s.unknown = append(s.unknown, e.ID)
			s.mapWrong("%s unknown on the map, its source reported %s at %s", e.ID, w.status, msTime(w.updated))
		case w.updated-e.Updated > soakMapLag.Milliseconds():
			s.mapWrong("%s on the map is from %s, the store has it from %s", e.ID, msTime(e.Updated), msTime(w.updated))
		case w.updated == e.Updated && w.status != e.Status:
			s.mapWrong("%s %s on the map, %s from its records", e.ID, e.Status, w.status)
		}
	}
	for id, w := range want {
		if !seen[id] && time.Since(time.UnixMilli(w.updated)) > soakMapLag {
			s.mapWrong("%s has records (the newest at %s) but no edge on the map", id, msTime(w.updated))
		}
	}
	return nil
}

// severity orders statuses as the map's worst-of does.
var severity = map[string]int{"unknown": 0, "ok": 1, "degraded": 2, "down": 3}

func msTime(ms int64) string { return time.UnixMilli(ms).UTC().Format("15:04:05.000") }

func atoi(s string) int64 {
	v, _ := strconv.ParseInt(s, 10, 64)
	return v
}

// rows runs a query on the store and splits its TSV.
func (s *soak) rows(ctx context.Context, sql string) ([][]string, error) {
	out, err := s.cfg.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" {
			rows = append(rows, strings.Split(line, "\t"))
		}
	}
	return rows, nil
}

func sameWeights(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// steerStatus is the status the map gives a steer edge of weight w (topomap: down at 0,
// degraded below the POP's base weight, 1 in the lab).
func steerStatus(w float64) string {
	switch {
	case w <= 0:
		return "down"
	case w < 1:
		return "degraded"
	}
	return "ok"
}

// failureChecks times what follows each failure and heal.
func (s *soak) failureChecks(now time.Time, w map[string]float64, firing map[string]bool, snap mapSnapshot) {
	alertOf := map[string]string{"pop": "MeridianPOPAvailability{page,pop=" + soakPOP.Target,
		"tunnel": "MeridianTunnelAvailability{page,", "osd": "MeridianCephWriteLatency{"}
	for kind, healed := range s.healedAt {
		// The page resolves along its SLO windows, after the heal (budgetPageResolves).
		_, fired := s.fires[kind]
		if _, done := s.resolved[kind]; !fired || done {
			continue
		}
		still := false
		for n := range firing {
			still = still || strings.HasPrefix(n, alertOf[kind]) && (kind != "tunnel" || strings.Contains(n, "nuremberg"))
		}
		if !still {
			s.resolved[kind] = now.Sub(healed).Seconds()
			s.note("%s heal: its page resolved %.1f s after the heal", kind, now.Sub(healed).Seconds())
		}
	}
	for kind, at := range s.failedAt {
		// Watched up to the budget even after the heal: a page that fires late is late,
		// not absent.
		if _, done := s.fires[kind]; done || now.Sub(at).Seconds() > budgetPageFires {
			continue
		}
		for n := range firing {
			if strings.HasPrefix(n, alertOf[kind]) && (kind != "tunnel" || strings.Contains(n, "nuremberg")) {
				s.fires[kind] = now.Sub(at).Seconds()
				s.note("%s failure: alert %s firing", kind, n)
				break
			}
		}
	}
	if at, ok := s.failedAt["osd"]; ok && math.IsNaN(s.osdSeen) && s.phase.fail == &soakOSD {
		for _, n := range snap.Nodes {
			if n.Kind == "osd" && strings.HasPrefix(n.ID, "osd:") && strings.HasSuffix(n.ID, "."+soakOSD.Target) && n.Status != "ok" {
				s.osdSeen = now.Sub(at).Seconds()
				s.note("osd failure: map shows %s %s", n.ID, n.Status)
			}
		}
	}
	pop := soakPOP.Target
	if healed, ok := s.healedAt["pop"]; ok && math.IsNaN(s.fullAt) {
		for k, v := range s.calmW {
			if strings.HasSuffix(k, " "+pop) && w[k] != v {
				return
			}
		}
		s.fullAt = now.Sub(healed).Seconds()
		s.note("pop heal: every weight of %s back to its calm value", pop)
	}
}

// sample records resources; t counts from the end of the warm-up.
func (s *soak) sample(ctx context.Context, warmUp time.Duration) {
	if s.cfg.Resources == nil {
		return
	}
	r, err := s.cfg.Resources(ctx)
	if err != nil {
		s.cfg.Log.Warn("soak: resources", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	caches := map[string]float64{}
	for c, b := range r.Caches {
		caches[c] = b / 1e6
	}
	s.resources = append(s.resources, resourceSample{t: time.Since(s.start.Add(warmUp)).Seconds(), rss: r.RSS / 1e6, heap: r.Heap / 1e6, engine: r.Engine / 1e6, caches: caches})
	for t, n := range r.Parts {
		s.parts[t] = max(s.parts[t], n)
	}
}

// cacheGrowth names the engine's caches that hold memory at the end, with their growth.
func (s *soak) cacheGrowth(ts []float64) string {
	last := s.resources[len(s.resources)-1].caches
	names := slices.Sorted(maps.Keys(last))
	var parts []string
	for _, c := range names {
		if last[c] < 0.1 {
			continue
		}
		ys := make([]float64, len(s.resources))
		for i, x := range s.resources {
			ys[i] = x.caches[c]
		}
		b, _ := slope(ts, ys)
		parts = append(parts, fmt.Sprintf("%s %s MB (%s MB/h)", c, num(last[c]), num(b)))
	}
	if len(parts) == 0 {
		return ""
	}
	return ", of which caches: " + strings.Join(parts, ", ")
}

// slope fits y = a + b·t by least squares and returns b per hour and its standard error.
func slope(ts, ys []float64) (perHour, stderr float64) {
	n := float64(len(ts))
	if n < 3 {
		return math.NaN(), math.NaN()
	}
	var mt, my float64
	for i := range ts {
		mt += ts[i]
		my += ys[i]
	}
	mt, my = mt/n, my/n
	var sxx, sxy float64
	for i := range ts {
		sxx += (ts[i] - mt) * (ts[i] - mt)
		sxy += (ts[i] - mt) * (ys[i] - my)
	}
	b := sxy / sxx
	var sse float64
	for i := range ts {
		r := ys[i] - (my + b*(ts[i]-mt))
		sse += r * r
	}
	se := math.Sqrt(sse / (n - 2) / sxx)
	return b * 3600, se * 3600
}

func percentile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	v = slices.Clone(v)
	sort.Float64s(v)
	return v[min(len(v)-1, int(math.Ceil(q*float64(len(v))))-1)]
}

func (s *soak) report(warmUp time.Duration, detect []float64) *SoakReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &SoakReport{Duration: s.cfg.Duration, WarmUp: warmUp, Timeline: s.timeline}
	add := func(name, inv, unit string, budget, measured float64, ok bool, detail string) {
		r.Rows = append(r.Rows, SoakRow{Name: name, Invariant: inv, Unit: unit, Budget: budget, Measured: measured, OK: ok, Detail: detail})
	}
	add("soak_calm_alerts_firing", "calm: alerts firing", "alerts", 0, float64(s.calmAlert), s.calmAlert == 0,
		fmt.Sprintf("most at one check; %d distinct", len(s.calmAlertNames)))
	add("soak_calm_weight_changes", "calm: steering weight changes", "changes", 0, float64(len(s.calmMoves)), len(s.calmMoves) == 0, first(s.calmMoves))
	add("soak_map_disagreements", "map equals the APIs at every check", "checks", 0, float64(len(s.mapBad)), len(s.mapBad) == 0 && s.mapChecks > 0 && (s.cfg.Query == nil || s.sourceChecks > 0),
		fmt.Sprintf("%d checks of the steer edges against the steering API, %d of the probe and tunnel edges against their stored records; %s", s.mapChecks, s.sourceChecks, first(s.mapBad)))
	add("soak_map_unknown_observed", "nothing unknown while observed", "elements", 0, float64(len(s.unknown)), len(s.unknown) == 0, first(s.unknown))
	p50, p99 := percentile(detect, 0.5), percentile(detect, 0.99)
	n := fmt.Sprintf("first failed probe to each drain decision, %d decisions", len(detect))
	add("soak_detect_to_steer_p50", "failure: detection to steer p50", "s", budgetDetectToSteerP50, p50, p50 <= budgetDetectToSteerP50, n)
	add("soak_detect_to_steer_p99", "failure: detection to steer p99", "s", budgetDetectToSteerP99, p99, p99 <= budgetDetectToSteerP99, n)
	for _, kind := range []string{"pop", "tunnel"} {
		v, ok := s.fires[kind]
		if !ok {
			v = math.NaN()
		}
		add("soak_page_fires_"+kind, kind+" failure: page alert fires", "s", budgetPageFires, v, ok && v <= budgetPageFires, "from the injection")
	}
	add("soak_osd_on_map", "osd slow: the map shows the OSD", "s", budgetPageFires, s.osdSeen, s.osdSeen <= budgetPageFires, "from the injection")
	add("soak_heal_full_weight", "heal: full weight after the POP answers again", "s", budgetFullWeight, s.fullAt, s.fullAt <= budgetFullWeight, "every weight of the POP at its calm value")
	for _, kind := range []string{"pop", "tunnel"} {
		v, ok, detail := s.pageResolved(kind, time.Now())
		add("soak_page_resolves_"+kind, "heal: the "+kind+" page resolves", "s", budgetPageResolves, v, ok, detail)
	}
	var ts, rss, heap, engine []float64
	for _, x := range s.resources {
		ts, rss, heap, engine = append(ts, x.t), append(rss, x.rss), append(heap, x.heap), append(engine, x.engine)
	}
	engineSlope, _ := slope(ts, engine)
	// A short soak cannot resolve 5 MB/h against the noise of GC and merges: growth fails
	// the invariant when it is above the budget by more than two standard errors.
	for _, m := range []struct {
		name, what string
		ys         []float64
	}{{"soak_rss_growth", "RSS", rss}, {"soak_heap_growth", "Go heap (live)", heap}} {
		b, se := slope(ts, m.ys)
		last := math.NaN()
		if len(m.ys) > 0 {
			last = m.ys[len(m.ys)-1]
		}
		detail := fmt.Sprintf("regression over %d samples, ±%s MB/h standard error, last %s MB", len(ts), num(se), num(last))
		if m.what == "RSS" && len(engine) > 0 {
			detail += fmt.Sprintf("; the engine tracks %s MB, growing %s MB/h%s", num(engine[len(engine)-1]), num(engineSlope), s.cacheGrowth(ts))
		}
		judged := len(ts) > 0 && ts[len(ts)-1] >= minGrowthWindow.Seconds()
		if !judged {
			detail += fmt.Sprintf("; not judged: under %s after warm-up", minGrowthWindow)
		}
		add(m.name, "resources: "+m.what+" growth after warm-up", "MB/h", budgetGrowth, b, !judged || b-2*se <= budgetGrowth, detail)
	}
	most, table := 0, ""
	for t, n := range s.parts {
		if n > most {
			most, table = n, t
		}
	}
	add("soak_parts_max", "resources: active parts of every table", "parts", budgetParts, float64(most), most <= budgetParts, "most: "+table)
	return r
}

// pageResolved is the time from the heal of kind to its page resolving, judged against
// budgetPageResolves; a page still firing when the soak ends at end is judged only once
// the budget has passed since the heal.
func (s *soak) pageResolved(kind string, end time.Time) (v float64, ok bool, detail string) {
	healed, wasHealed := s.healedAt[kind]
	_, fired := s.fires[kind]
	if v, done := s.resolved[kind]; done {
		return v, v <= budgetPageResolves, "from the heal; the longest short window of the page's pairs, plus a minute"
	}
	if !fired || !wasHealed {
		return math.NaN(), true, "not judged: no page fired, or no heal"
	}
	v = end.Sub(healed).Seconds()
	if v < budgetPageResolves {
		// NaN: its BENCH line must not read as a resolution time.
		return math.NaN(), true, fmt.Sprintf("not judged: still firing when the soak ended, %s s after the heal", num(v))
	}
	return v, false, "still firing when the soak ended"
}

func first(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	if len(s) == 1 {
		return s[0]
	}
	return fmt.Sprintf("%s, and %d more", s[0], len(s)-1)
}
