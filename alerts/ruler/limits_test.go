package ruler

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
)

func TestSubqueryStepsCountedAsTheEngineEvaluates(t *testing.T) {
	e := stepLimitEngine{parser: parser.NewParser(parser.Options{}), maxSteps: 1000,
		noStep: func(int64) int64 { return 10_000 }} // 10s evaluation interval
	for _, tc := range []struct {
		q    string
		span time.Duration
		ok   bool
	}{
		{"max_over_time(x[10m:1s])", 0, true},                        // 600
		{"max_over_time(x[20m:1s])", 0, false},                       // 1200
		{"max_over_time(x[2h:])", 0, true},                           // 720 at the 10s evaluation interval
		{"max_over_time(x[3h:])", 0, false},                          // 1080
		{"max_over_time(x[10m:1s])", 10 * time.Minute, false},        // a range query evaluates it over 20m
		{"max_over_time(max_over_time(x[5m:1s])[5m:1m])", 0, true},   // inner: 10m at 1s = 600
		{"max_over_time(max_over_time(x[5m:1s])[15m:1m])", 0, false}, // inner: 20m at 1s
		{"vector(1)[1y:1ms]", 0, false},
		{"rate(x[1y])", 0, true}, // not a subquery: bounded by the samples limit
	} {
		err := e.check(tc.q, tc.span)
		if (err == nil) != tc.ok {
			t.Errorf("%s over %s: %v, want ok=%v", tc.q, tc.span, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "ruler.query_max_subquery_steps") {
			t.Errorf("%s: error does not name the limit: %v", tc.q, err)
		}
	}
}

func TestLengthParserRefusesBeforeParsing(t *testing.T) {
	p := lengthParser{Parser: parser.NewParser(parser.Options{}), max: 100}
	long := strings.Repeat("(", 60) + "1" + strings.Repeat(")", 60)
	if _, err := p.ParseExpr(long); err == nil || !strings.Contains(err.Error(), "121 bytes, more than the limit of 100 (ruler.query_max_length)") {
		t.Errorf("ParseExpr: %v", err)
	}
	if _, err := p.ParseMetricSelectors([]string{"up", `{a="` + strings.Repeat("x", 100) + `"}`}); err == nil {
		t.Error("ParseMetricSelectors took a selector over the limit")
	}
	if _, err := p.ParseExpr("sum(up)"); err != nil {
		t.Error(err)
	}
}

// queryAPI runs one query through the ruler's HTTP API.
func queryAPI(t *testing.T, base, path string, params url.Values) (int, apiReply, time.Duration) {
	t.Helper()
	start := time.Now()
	code, body, err := call(context.Background(), http.MethodPost, base+path, params)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%s %v: %v", path, params, err)
	}
	var rep apiReply
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("%s: %d %.300s: %v", path, code, body, err)
	}
	return code, rep, took
}

// TestQueryLimits: each limit refuses its bomb with a 4xx error that names it, quickly,
// and the process serves on.
func TestQueryLimits(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, base, _ := servedRuler(t, testConfig(t), reg)
	now := strconvTime(time.Now())

	for _, tc := range []struct {
		name, path, query, want string
		extra                   url.Values
	}{
		{"step bomb", "/query", "vector(1)[1y:1ms]", "ruler.query_max_subquery_steps", nil},
		{"step bomb in a range query", "/query_range", "max_over_time(vector(1)[1m:1ms])", "ruler.query_max_subquery_steps",
			url.Values{"start": {strconvTime(time.Now().Add(-time.Hour))}, "end": {now}, "step": {"1m"}}},
		{"nesting bomb", "/query", strings.Repeat("(", 20000) + "1" + strings.Repeat(")", 20000), "ruler.query_max_length", nil},
		{"nesting bomb in a selector", "/series", "", "ruler.query_max_length",
			url.Values{"match[]": {strings.Repeat("(", 20000) + "up" + strings.Repeat(")", 20000)}}},
	} {
		params := url.Values{"query": {tc.query}, "time": {now}}
		for k, v := range tc.extra {
			params[k] = v
		}
		code, rep, took := queryAPI(t, base, tc.path, params)
		if code != http.StatusBadRequest || rep.ErrorType != "bad_data" || !strings.Contains(rep.Error, tc.want) {
			t.Errorf("%s: %d %+v, want 400 bad_data naming %s", tc.name, code, rep, tc.want)
		}
		if took > 2*time.Second {
			t.Errorf("%s: refused after %s", tc.name, took)
		}
		t.Logf("%s: refused in %s: %s", tc.name, took.Round(time.Microsecond), rep.Error)
	}
	// The deepest nesting the default length admits parses in bounded time.
	deepest := strings.Repeat("(", 4095) + "1" + strings.Repeat(")", 4095)
	code, rep, took := queryAPI(t, base, "/query", url.Values{"query": {deepest}, "time": {now}})
	if code != 200 || rep.Status != "success" || took > 5*time.Second {
		t.Errorf("%d nested parentheses: %d %+v after %s", 4095, code, rep.Error, took)
	}
	t.Logf("%d bytes of nested parentheses answered in %s", len(deepest), took.Round(time.Millisecond))
	if got := promtest.Sum(t, reg, "prometheus_engine_queries_concurrent_max"); got != 20 {
		t.Errorf("engine's concurrency limit %v, want the default 20", got)
	}
	code, rep, _ = queryAPI(t, base, "/query", url.Values{"query": {"sum(meridian_sli_probe_requests_total)"}, "time": {now}})
	if code != 200 || rep.Status != "success" {
		t.Errorf("valid query: %d %+v", code, rep)
	}
}

// TestQueryTimeoutAndSamples: a query over the time or samples limit is stopped by the
// engine with its error; the concurrency limit is the engine's.
func TestQueryTimeoutAndSamples(t *testing.T) {
	for _, tc := range []struct {
		name    string
		limit   func(*Config)
		query   string
		code    int
		errType string
	}{
		{"timeout", func(c *Config) { c.QueryTimeout = 10 * time.Millisecond }, "count_over_time(vector(1)[1h:1ms])", http.StatusServiceUnavailable, "timeout"},
		{"samples", func(c *Config) { c.QueryMaxSamples = 1000 }, "count_over_time(vector(1)[10s:1ms])", http.StatusUnprocessableEntity, "execution"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.QueryMaxSubquerySteps = 1 << 40 // let the engine meet its own limits
			cfg.QueryMaxConcurrency = 3
			tc.limit(&cfg)
			reg := prometheus.NewRegistry()
			r := startRulerConfig(t, sli.New(sli.Deps{Inventory: inventory.Static(testInventory())}), reg, cfg)
			base, _ := apiServer(t, r)
			code, rep, took := queryAPI(t, base, "/query", url.Values{"query": {tc.query}, "time": {strconvTime(time.Now())}})
			if code != tc.code || rep.ErrorType != tc.errType {
				t.Errorf("%d %+v, want %d %s", code, rep, tc.code, tc.errType)
			}
			t.Logf("stopped after %s: %s", took.Round(time.Millisecond), rep.Error)
			if got := promtest.Sum(t, reg, "prometheus_engine_queries_concurrent_max"); got != 3 {
				t.Errorf("engine's concurrency limit %v, want 3", got)
			}
		})
	}
}

func strconvTime(ts time.Time) string { return ts.Format(time.RFC3339Nano) }

// A subquery without a step ([5m:]) runs at the evaluation interval, as in Prometheus,
// in a rule file, in an SLO spec and in an API query; before, the engine called a nil
// function for it.
func TestStepLessSubqueries(t *testing.T) {
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "stepless.yml")
	if err := os.WriteFile(ruleFile, []byte(`groups:
  - name: stepless
    rules:
      - record: test:requests:max5m
        expr: max_over_time(sum(meridian_sli_probe_requests_total)[5m:])
      - alert: StepLess
        expr: max_over_time(vector(1)[1m:]) > 0
`), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := filepath.Join(dir, "stepless-spec.yaml")
	if err := os.WriteFile(spec, []byte(`version: "prometheus/v1"
service: "stepless"
slo_period: 1h
slos:
  - name: "availability"
    objective: 90
    sli:
      events:
        error_query: sum by (pop, site, service) (max_over_time(rate(meridian_sli_probe_errors_total[{{.window}}])[{{.window}}:]))
        total_query: sum by (pop, site, service) (max_over_time(rate(meridian_sli_probe_requests_total[{{.window}}])[{{.window}}:]))
    alerting:
      name: StepLessAvailability
      page_alert: {labels: {severity: critical}}
      ticket_alert: {disable: true}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.SpecFiles = append(cfg.SpecFiles, spec)
	cfg.RuleFiles = []string{ruleFile}
	r, base, _ := servedRuler(t, cfg, prometheus.NewRegistry())

	// Every rule evaluates without error, those with step-less subqueries included.
	wait.Until(t, 30*time.Second, "every rule evaluated healthy, the SLO ratio recorded", func() bool {
		evaluated := 0
		for _, g := range r.manager.RuleGroups() {
			for _, rule := range g.Rules() {
				if rule.Health() != rules.HealthGood {
					return false
				}
				evaluated++
			}
		}
		code, rep, _ := queryAPI(t, base, "/query", url.Values{"query": {`slo:sli_error:ratio_rate5s{sloth_service="stepless"}`}})
		return evaluated > 0 && code == 200 && string(rep.Data) != `{"resultType":"vector","result":[]}` && testutil.ToFloat64(r.appended) > 0
	})
	for _, g := range r.manager.RuleGroups() {
		for _, rule := range g.Rules() {
			if err := rule.LastError(); err != nil {
				t.Errorf("rule %s: %v", rule.Name(), err)
			}
		}
	}
	wait.Until(t, 10*time.Second, "the step-less alert firing", func() bool { return hasAlert(r.Firing(), "StepLess") })

	now := time.Now()
	for path, params := range map[string]url.Values{
		"/query": {"query": {"max_over_time(test:requests:max5m[5m:])"}, "time": {strconvTime(now)}},
		"/query_range": {"query": {"max_over_time(sum(meridian_sli_probe_requests_total)[1m:])"},
			"start": {strconvTime(now.Add(-10 * time.Second))}, "end": {strconvTime(now)}, "step": {"1s"}},
	} {
		code, rep, _ := queryAPI(t, base, path, params)
		if code != 200 || rep.Status != "success" || strings.Contains(string(rep.Data), `"result":[]`) {
			t.Errorf("%s %v: %d %+v", path, params, code, rep)
		}
	}
}

func hasAlert(as []alerts.Alert, name string) bool {
	for _, a := range as {
		if a.Name == name {
			return true
		}
	}
	return false
}

// TestRemoteReadSampleLimit: a remote read (a sampled response, held in memory) is
// bounded by the query samples limit too.
func TestRemoteReadSampleLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueryMaxSamples = 50
	r, base, _ := servedRuler(t, cfg, prometheus.NewRegistry())
	wait.Until(t, 10*time.Second, "more SLI samples than the limit", func() bool { return testutil.ToFloat64(r.appended) > 50 })

	now := time.Now()
	req := &prompb.ReadRequest{Queries: []*prompb.Query{{
		StartTimestampMs: now.Add(-time.Hour).UnixMilli(), EndTimestampMs: now.Add(time.Minute).UnixMilli(),
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_RE, Name: "__name__", Value: "meridian_sli_.+"}},
	}}}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/read", "application/x-protobuf", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "exceeded sample limit (50)") {
		t.Errorf("remote read of every SLI series: %d %.300q", resp.StatusCode, body)
	}
}
