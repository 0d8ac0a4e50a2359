package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The growth invariant reads a regression slope, not endpoints: a sawtooth on a flat line
// is flat, and a line climbing 6 MB/h under the same sawtooth is found climbing.
func TestSlopeSeesThroughSawtooth(t *testing.T) {
	for _, tc := range []struct {
		perHour float64
	}{{0}, {6}, {-3}} {
		var ts, ys []float64
		for i := range 720 { // an hour, every 5 s
			sec := float64(i * 5)
			saw := float64(i%12) * 4 // the GC's 48 MB sawtooth, a minute long
			ts, ys = append(ts, sec), append(ys, 500+saw+tc.perHour*sec/3600)
		}
		got, se := slope(ts, ys)
		if math.Abs(got-tc.perHour) > 2*se+0.5 {
			t.Errorf("slope %g MB/h ± %g, want %g", got, se, tc.perHour)
		}
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{0.4, 2.9, 0.6, 0.5, 0.7}
	if p := percentile(v, 0.5); p != 0.6 {
		t.Errorf("p50 %g", p)
	}
	if p := percentile(v, 0.99); p != 2.9 {
		t.Errorf("p99 %g", p)
	}
	if !math.IsNaN(percentile(nil, 0.5)) {
		t.Error("p50 of nothing is a number")
	}
}

// The report fails an invariant that did not hold, and its BENCH lines carry value/budget.
func TestReportBenchLines(t *testing.T) {
	r := &SoakReport{Rows: []SoakRow{
		{Name: "soak_detect_to_steer_p50", Invariant: "p50", Unit: "s", Budget: 1.5, Measured: 0.75, OK: true},
		{Name: "soak_calm_alerts_firing", Invariant: "calm alerts", Unit: "alerts", Budget: 0, Measured: 2, OK: false, Detail: "X"},
	}}
	var b bytes.Buffer
	r.Write(&b)
	for _, want := range []string{"BENCH soak_detect_to_steer_p50 0.75 s ratio=0.5\n", "BENCH soak_calm_alerts_firing 2 alerts ratio=inf\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	if f := r.Failed(); len(f) != 1 || f[0] != "calm alerts: X" {
		t.Errorf("failed %q", f)
	}
}

// The map's probe and tunnel edges are compared with their newest stored records: an edge
// that shows its newest record's status agrees; a wrong status, an edge behind the store,
// one unknown while reported, and a record with no edge are each found.
func TestCheckSourcesFindsWhatTheMapGotWrong(t *testing.T) {
	now := time.Now().UnixMilli()
	edges := []map[string]any{
		{"id": "probe:paris->tokyo/http", "status": "degraded", "updated": now - 1000}, // agrees: rtt over 250 ms
		{"id": "probe:paris->london/http", "status": "ok", "updated": now - 1000},      // wrong: the record failed
		{"id": "probe:london->tokyo/http", "status": "ok", "updated": now - 30000},     // behind the store
		{"id": "probe:tokyo->paris/http", "status": "unknown", "updated": now - 1000},  // unknown while reported
		{"id": "tunnel:node:a|node:b", "status": "down", "updated": now - 2000},        // agrees: worse end down
		{"id": "tunnel:node:c|node:d", "status": "ok", "updated": now - 2000},          // agrees
		{"id": "probe:newyork->paris/http", "status": "ok", "updated": now + 1000},     // the store has not got it yet
		{"id": "steer:france->paris/www", "status": "ok", "updated": now - 1000},       // not a stored edge
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"edges": edges})
	}))
	defer srv.Close()
	query := func(_ context.Context, sql string) ([]byte, error) {
		if strings.Contains(sql, ".probes") {
			return []byte(fmt.Sprintf("probe:paris->tokyo/http\t%[1]d\tdegraded\nprobe:paris->london/http\t%[1]d\tdown\n"+
				"probe:london->tokyo/http\t%[1]d\tok\nprobe:tokyo->paris/http\t%[1]d\tok\nprobe:newyork->paris/http\t%[2]d\tok\n"+
				"probe:tokyo->london/http\t%[3]d\tok\n", now-1000, now-2000, now-10000)), nil
		}
		return []byte(fmt.Sprintf("a\tb\t%[1]d\tok\nb\ta\t%[2]d\tdown\nd\tc\t%[2]d\tok\n", now-3000, now-2000)), nil
	}
	s := &soak{cfg: SoakConfig{Meridian: srv.URL, Query: query, Database: "t", ProbeRTTDegraded: 250 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, http: srv.Client(), start: time.Now()}
	if err := s.checkSources(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(s.mapBad, "\n")
	for _, want := range []string{
		"probe:paris->london/http ok on the map, down from its records",
		"probe:london->tokyo/http on the map is from",
		"probe:tokyo->paris/http unknown on the map",
		"probe:tokyo->london/http has records",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("not found: %q", want)
		}
	}
	if len(s.mapBad) != 4 {
		t.Errorf("%d disagreements, want 4:\n%s", len(s.mapBad), got)
	}
	if len(s.unknown) != 1 || s.sourceChecks != 1 {
		t.Errorf("unknown %q, source checks %d", s.unknown, s.sourceChecks)
	}
}

// The page's resolution is judged against the page pairs' longest short window (30m)
// plus a minute: the hour's 1,763 s holds, a page resolving later fails, and one still
// firing when the soak ends is judged only once the budget has passed since the heal.
func TestPageResolvedBudget(t *testing.T) {
	if budgetPageResolves != 1860 {
		t.Fatalf("budget %g s, want 30m + 1m", budgetPageResolves)
	}
	healed := time.Now()
	for _, tc := range []struct {
		name     string
		resolved map[string]float64
		end      time.Duration // from the heal
		want     float64
		ok       bool
	}{
		{"resolved in the hour's soak", map[string]float64{"pop": 1763}, time.Hour, 1763, true},
		{"resolved late", map[string]float64{"pop": 1900}, time.Hour, 1900, false},
		{"still firing past the budget", nil, 32 * time.Minute, 1920, false},
		{"still firing, soak too short to judge", nil, 330 * time.Second, math.NaN(), true},
	} {
		s := &soak{fires: map[string]float64{"pop": 53}, healedAt: map[string]time.Time{"pop": healed}, resolved: tc.resolved}
		v, ok, detail := s.pageResolved("pop", healed.Add(tc.end))
		if !(v == tc.want || math.IsNaN(v) && math.IsNaN(tc.want)) || ok != tc.ok {
			t.Errorf("%s: %g s ok=%v (%s), want %g s ok=%v", tc.name, v, ok, detail, tc.want, tc.ok)
		}
	}
	s := &soak{fires: map[string]float64{}, healedAt: map[string]time.Time{"tunnel": healed}}
	if v, ok, _ := s.pageResolved("tunnel", healed.Add(time.Hour)); !math.IsNaN(v) || !ok {
		t.Errorf("a page that never fired: %g s ok=%v, want not judged", v, ok)
	}
}
