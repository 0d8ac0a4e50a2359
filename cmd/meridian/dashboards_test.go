package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/dashboards"
	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/lab"
)

// emptyByDesign are the dashboard queries that return nothing from a calm lab, and why.
// Every other query must return rows or series.
var emptyByDesign = map[string]string{
	"hubble.json: panel Drop reasons / A":        "the calm lab drops no flow: drops come with a policy deny or a failure",
	"hubble.json: panel Recent drops / A":        "the calm lab drops no flow: drops come with a policy deny or a failure",
	"overview.json: panel Firing SLO alerts / A": "no SLO alert fires in a calm lab (on a starved machine probes time out, and some do)",
	"slos.json: panel Firing SLO alerts / A":     "no SLO alert fires in a calm lab (on a starved machine probes time out, and some do)",
	"frontdoor.json: annotation Failovers":       "no failover in a calm lab",
	"frontdoor.json: panel Failovers / A":        "no failover in a calm lab",
}

// TestDashboardPanelsHaveData runs every query of every shipped dashboard, ClickHouse and
// PromQL alike, as Grafana sends it (every variable on All, the last 30 minutes), against
// Meridian over the lab after the lab has run a few minutes (MERIDIAN_PANELS_WAIT, default
// 3m): each returns rows or series unless it is listed in emptyByDesign. No built-in
// alert (Ceph health, self-alerts) fires in the calm lab. -short skips it.
func TestDashboardPanelsHaveData(t *testing.T) {
	if testing.Short() {
		t.Skip("the lab runs for minutes")
	}
	runFor := 3 * time.Minute
	if v := os.Getenv("MERIDIAN_PANELS_WAIT"); v != "" {
		var err error
		if runFor, err = time.ParseDuration(v); err != nil {
			t.Fatalf("MERIDIAN_PANELS_WAIT: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const token = "s3cret"
	l, err := lab.Start(ctx, lab.Config{ListenAddress: "127.0.0.1:0", Testdata: "../../testdata"}, token, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-l.Done() }() // the lab's namespaces and daemons go before the test ends
	specs, _ := filepath.Glob("../../alerts/slos/*.yaml")
	a := testApp(t, append(serveArgs(t, "panels"), "-ruler.spec-files="+strings.Join(specs, ","),
		fmt.Sprintf("-steering.dns.listen=127.0.0.1:%d", amtest.FreePort(t)), "-steering.dns.zone="+lab.Zone)...)
	labOverlay(a.cfg, l.Endpoints())
	if err := a.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	base := startApp(t, a)
	time.Sleep(runFor) // the lab runs: this is the duration under test, not a synchronisation

	// The replay-versus-live panel shows the last replay: run one over the lab's run, and
	// wait for the ruler to store its gauges.
	if body, code := get(t, base+"/api/steering/replay?from="+url.QueryEscape(runFor.String())+"&to=now", token); code != 200 {
		t.Fatalf("replay over the lab's run: %d %s", code, body)
	}
	wait.Until(t, time.Minute, "the replay's gauges in the ruler's TSDB", func() bool {
		n, err := panelRows(t, a, base, token, dashboards.Query{Expr: "meridian_steering_replay_changes"}, time.Now())
		return err == nil && n > 0
	})

	to := time.Now()
	queries, err := dashboards.Queries(to.Add(-30*time.Minute), to, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var empty []string
	withData := 0
	for _, q := range queries {
		n, err := panelRows(t, a, base, token, q, to)
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
			continue
		}
		why, listed := emptyByDesign[q.Where]
		switch {
		case n == 0 && !listed:
			empty = append(empty, q.Where)
		case n > 0 && listed:
			t.Logf("%s, empty by design (%s), has %d rows or series", q.Where, why, n)
		case n > 0:
			withData++
		}
	}
	t.Logf("%d of %d dashboard queries return data; %d empty by design", withData, len(queries), len(emptyByDesign))

	// Built-in alerts carry a severity and no sloth_severity.
	var al struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	getJSON(t, base+"/prometheus/api/v1/alerts", token, &al)
	for _, x := range al.Data.Alerts {
		if x.Labels["sloth_severity"] == "" {
			t.Errorf("built-in alert %s is %s in the calm lab: %v", x.Labels["alertname"], x.State, x.Labels)
		}
	}
	for _, w := range empty {
		t.Errorf("%s: no rows or series", w)
	}
}

// panelRows runs q as the data source would and returns how many rows (ClickHouse) or
// series (PromQL, an instant query at ts through /prometheus) it returns.
func panelRows(t *testing.T, a *app, base, token string, q dashboards.Query, ts time.Time) (int, error) {
	if q.SQL != "" {
		out, err := a.store.Query(context.Background(), q.SQL, "TSV")
		if err != nil {
			return 0, err
		}
		return strings.Count(string(out), "\n"), nil
	}
	u := base + "/prometheus/api/v1/query?" + url.Values{"query": {q.Expr}, "time": {ts.Format(time.RFC3339Nano)}}.Encode()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result json.RawMessage `json:"result"`
		} `json:"data"`
	}
	body, code := get(t, u, token)
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 {
		return 0, fmt.Errorf("HTTP %d: %s", code, body)
	}
	var series []json.RawMessage
	if err := json.Unmarshal(r.Data.Result, &series); err != nil {
		return 1, nil // a scalar or string result
	}
	return len(series), nil
}
