package steering

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/lab"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

// store writes the harness's records into a fresh database, as the pipeline would.
func (h *labHarness) store(t *testing.T) *storage.Store {
	s := storagetest.New(t)
	byKind := map[pipeline.Kind][]pipeline.Record{}
	for _, r := range h.history().recs {
		byKind[r.Kind()] = append(byKind[r.Kind()], r)
	}
	enc := storage.NewEncoder()
	for kind, recs := range byKind {
		native, err := enc.Encode(kind, recs)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Insert(context.Background(), pipeline.Block{Kind: kind, Rows: len(recs), Token: "replay-" + kind.String(), Native: native}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Through ClickHouse: the stored inputs replay to exactly the stored live decisions,
// capacity ones and their utilisation included.
func TestReplayFromClickHouse(t *testing.T) {
	h := newLabHarness(t, testConfig(t))
	for i := range h.inv.POPs {
		h.inv.POPs[i].Capacity.SessionsPerSecond = 1000
	}
	h.e.load = &closedLoop{e: h.e, now: func() time.Time { return h.now }, demand: map[groupKey]float64{
		{"api." + lab.Zone, "france"}: 800, {"www." + lab.Zone, "united-kingdom"}: 500, {"www." + lab.Zone, "france"}: 300}}
	from, to := h.scenario()
	s := h.store(t)
	res, err := Replay(context.Background(), NewHistory(s, s.Database()), testConfig(t), h.inv, ReplayOptions{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	mem, err := Replay(context.Background(), h.history(), testConfig(t), h.inv, ReplayOptions{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Live) != len(mem.Live) || len(res.Decisions) != len(res.Live) || len(res.Differences) != 0 || res.Ticks != mem.Ticks {
		t.Fatalf("from ClickHouse: %d live (%d in memory), %d replayed, %d ticks (%d), differences %+v", len(res.Live), len(mem.Live), len(res.Decisions), res.Ticks, mem.Ticks, res.Differences)
	}
	capacity := 0
	for i := range res.Live {
		if res.Live[i] != mem.Live[i] {
			t.Fatalf("live decision %d read back as %+v, want %+v", i, res.Live[i], mem.Live[i])
		}
		if res.Live[i].Cause == CauseCapacity && res.Live[i].Utilisation > 0 {
			capacity++
		}
	}
	if capacity == 0 {
		t.Fatal("no capacity decision with its utilisation: the loads' round trip was not tested")
	}
	// What the inputs cost, against the probes that fed them (logged for the README).
	out, err := s.Query(context.Background(), "SELECT table, sum(rows), sum(data_compressed_bytes) FROM system.parts WHERE database = currentDatabase() AND active AND table IN ('steering_inputs', 'steering_decisions') GROUP BY table ORDER BY table", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s of ticks, compressed:\n%s", to.Sub(from), out)
}

func TestReplayAPI(t *testing.T) {
	h := newLabHarness(t, testConfig(t))
	from, to := h.scenario()
	s := h.store(t)
	h.e.history = NewHistory(s, s.Database())
	h.e.now = func() time.Time { return to.Add(time.Minute) }
	srv := httptest.NewServer(RequireToken("tok", h.e.Handler()))
	defer srv.Close()
	call := func(method string, q url.Values, body, token string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+"/api/steering/replay?"+q.Encode(), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	code, body := call("GET", url.Values{"from": {rfc(from)}, "to": {rfc(to)}, "format": {"json"}}, "", "tok")
	var res ReplayResult
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || len(res.Decisions) == 0 || len(res.Differences) != 0 {
		t.Fatalf("GET: %d %.300s", code, body)
	}
	// The dashboard's comparison: the last replay next to live, per group.
	changes := func(run, kind string) float64 {
		return testutil.ToFloat64(h.e.replayed.changes.WithLabelValues("api.meridian.test.", "france", run, kind))
	}
	if d, r, l := testutil.ToFloat64(h.e.replayed.differences), changes("replay", "drains"), changes("live", "drains"); d != 0 || r == 0 || r != l || changes("replay", "weight_changes") != changes("live", "weight_changes") {
		t.Errorf("after the live-configuration replay: %v differences, France's drains %v replayed, %v live; want 0 and equal", d, r, l)
	}
	code, body = call("POST", url.Values{"from": {rfc(from)}, "to": {rfc(to)}, "format": {"csv"}}, "steering:\n  min_hold: 2m\n", "tok")
	if code != 200 || !strings.Contains(body, "\nsummary,api.meridian.test.,france,") || !strings.Contains(body, "\ndiffers:replayed,") && !strings.Contains(body, "\nreplay_only:replayed,") {
		t.Fatalf("POST candidate: %d %.500s", code, body)
	}
	if d := testutil.ToFloat64(h.e.replayed.differences.WithLabelValues("true")); d == 0 || testutil.CollectAndCount(h.e.replayed.differences) != 1 || changes("replay", "drains") != changes("live", "drains") {
		t.Errorf("after the longer-hold candidate: %v differences, France's drains %v replayed, %v live; want differences (later restores), the same drains", d, changes("replay", "drains"), changes("live", "drains"))
	}
	code, body = call("GET", url.Values{"from": {"10m"}, "to": {"now"}}, "", "tok")
	if code != 200 || !strings.HasPrefix(body, "replay ") || !strings.Contains(body, "regret mean ms") {
		t.Fatalf("GET text, relative times: %d %.300s", code, body)
	}
	for _, tc := range []struct {
		method string
		q      url.Values
		body   string
		want   string
	}{
		{"GET", url.Values{"from": {rfc(to)}, "to": {rfc(from)}}, "", "is not before"},
		{"GET", url.Values{"from": {"30h"}, "to": {"now"}}, "", "longer than the limit of 24h0m0s"},
		{"GET", url.Values{"from": {rfc(to.Add(time.Hour))}, "to": {rfc(to.Add(2 * time.Hour))}}, "", "no steering inputs recorded"},
		{"GET", url.Values{"from": {"yesterday"}, "to": {"now"}}, "", `from: "yesterday": want an RFC 3339 time`},
		{"GET", url.Values{"from": {"10m"}, "to": {"now"}, "format": {"xml"}}, "", `format "xml"`},
		{"POST", url.Values{"from": {"10m"}, "to": {"now"}}, "steering:\n  ramp_step: 2\n", "candidate configuration: steering.ramp_step: must be in (0,1]"},
		{"POST", url.Values{"from": {"10m"}, "to": {"now"}}, "steering:\n  overrides: [{action: pin, pop: atlantis}]\n", `unknown POP "atlantis"`},
	} {
		code, body := call(tc.method, tc.q, tc.body, "tok")
		var e struct{ Error string }
		if json.Unmarshal([]byte(body), &e); code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s %v: %d %s, want 400 with %q", tc.method, tc.q, code, body, tc.want)
		}
	}
	if got := testutil.ToFloat64(h.e.refused.WithLabelValues("replay")); got != 7 {
		t.Errorf("refused replays counted %v, want 7", got)
	}
	if code, _ := call("GET", url.Values{"from": {"10m"}, "to": {"now"}}, "", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", code)
	}

	// The command line asks the same API; a candidate's errors name its file.
	t.Setenv("TEST_REPLAY_TOKEN", "tok")
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("steering:\n  min_hold: 2m\n"), 0o600)
	os.WriteFile(bad, []byte("steering:\n  min_hold: -2m\n"), 0o600)
	var out strings.Builder
	args := []string{"-server", srv.URL, "-from", rfc(from), "-to", rfc(to), "-o", "json", "-config", good}
	if err := ReplayCmd(context.Background(), args, "TEST_REPLAY_TOKEN", &out, io.Discard); err != nil || json.Unmarshal([]byte(out.String()), &res) != nil || !res.Candidate || len(res.Differences) == 0 {
		t.Errorf("replay command: %v %.300s", err, out.String())
	}
	args[len(args)-1] = bad
	if err := ReplayCmd(context.Background(), args, "TEST_REPLAY_TOKEN", io.Discard, io.Discard); err == nil || err.Error() != bad+": steering.min_hold: must be >= 0" {
		t.Errorf("replay command with a bad candidate: %v", err)
	}
}
