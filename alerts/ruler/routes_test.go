package ruler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/internal/testlog"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
)

// apiRoutes are the routes Prometheus's API registered on the ruler's router, as the
// router's instrumentation listed them (meridian_ruler_api_requests_total{handler}).
func apiRoutes(t *testing.T, g prometheus.Gatherer) []string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != "meridian_ruler_api_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "handler" {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// servedRuler runs a ruler of cfg, registered in reg, over an SLI fed by healthy probes, with its API
// served (apiServer).
func servedRuler(t *testing.T, cfg Config, reg *prometheus.Registry) (*Ruler, string, *testlog.Buffer) {
	t.Helper()
	s := sli.New(sli.Deps{Inventory: inventory.Static(testInventory())})
	var healthy atomic.Bool
	prober(t, s, &healthy)
	r := startRulerConfig(t, s, reg, cfg)
	base, logs := apiServer(t, r)
	return r, base, logs
}

// apiServer serves the ruler's API on a loopback port; the returned buffer collects
// net/http's error log, where a handler's recovered panic would show.
func apiServer(t *testing.T, r *Ruler) (string, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	srv := httptest.NewUnstartedServer(http.StripPrefix(APIPrefix, r.Handler()))
	srv.Config.ErrorLog = log.New(logs, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL + APIPrefix + "/api/v1", logs
}

// apiReply is Prometheus's API envelope.
type apiReply struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

// call sends one request; params go in the URL for GET, HEAD, DELETE and OPTIONS, in a
// form body otherwise; header pairs (name, value, ...) are set. A streaming reply
// (server-sent events) is closed once its header arrived.
func call(ctx context.Context, method, u string, params url.Values, header ...string) (int, []byte, error) {
	var body io.Reader
	if method == http.MethodPost || method == http.MethodPut {
		body = strings.NewReader(params.Encode())
	} else if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp.StatusCode, nil, nil
	}
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestAPIRoutesSurviveHostileRequests calls every route Prometheus's API registers on the
// ruler, with every method, with valid parameters, none and an Origin header, and then
// with each parameter made hostile in turn: no request may crash (a dropped connection or a panic in net/http's
// log), every answer is below 500 or a JSON error that says what failed, and the API
// still answers a valid query afterwards. The engine is loaded (TestMain).
func TestAPIRoutesSurviveHostileRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, base, logs := servedRuler(t, testConfig(t), reg)
	wait.Until(t, 10*time.Second, "SLI series in the TSDB", func() bool { return testutil.ToFloat64(r.appended) > 0 })

	routes := apiRoutes(t, reg)
	// The routes the 2026-12-01 sweep found crashing are among those listed.
	for _, want := range []string{"/query", "/query_range", "/notifications", "/notifications/live", "/targets/relabel_steps", "/label/:name/values", "/*path"} {
		if !slices.Contains(routes, want) {
			t.Fatalf("route %s not listed; routes: %v", want, routes)
		}
	}
	if len(routes) < 39 { // Prometheus v0.315.0 registers 39 paths
		t.Fatalf("%d routes listed, want Prometheus's 39 or more: %v", len(routes), routes)
	}

	now := time.Now()
	valid := url.Values{
		"query":      {"sum by (pop) (meridian_sli_probe_requests_total)"},
		"match[]":    {"meridian_sli_probe_requests_total"},
		"time":       {strconv.FormatInt(now.Unix(), 10)},
		"start":      {strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)},
		"end":        {strconv.FormatInt(now.Unix(), 10)},
		"step":       {"15s"},
		"limit":      {"10"},
		"metric":     {"meridian_sli_probe_requests_total"},
		"scrapePool": {"sli"},
		"labels":     {`{"__address__":"127.0.0.1:9090","job":"sli"}`},
		"type":       {"alert"},
	}
	nest := strings.Repeat("(", 20000) + "1" + strings.Repeat(")", 20000)
	hostile := map[string][]string{
		"query": {"vector(1)[1y:1ms]", nest, "max_over_time(meridian_sli_probe_requests_total[5m:])",
			"max_over_time(vector(1)[1h:1ms])", "count_over_time({__name__=~\".+\"}[1000y])", `{__name__=~".*"}`,
			"meridian_sli_probe_requests_total @ 1e18", "meridian_sli_probe_requests_total offset -1000y",
			"topk(1e18, meridian_sli_probe_requests_total)", "quantile_over_time(NaN, vector(1)[5m:])",
			"label_replace(vector(1), \"a\", \"$1\", \"b\", \"(.*\")", "", "\x00\xff{", strings.Repeat("a", 1<<20)},
		"match[]":        {`{__name__=~".*"}`, "{", nest, ""},
		"time":           {"NaN", "-Inf", "1e300", "-99999999999999", "yesterday"},
		"start":          {"NaN", "1e300", "-99999999999999", ""},
		"end":            {"-1e300", "99999999999999"},
		"step":           {"0", "-1", "1e-9", "NaN", "1ms", "1000y"},
		"limit":          {"-1", "99999999999999999999", "x"},
		"timeout":        {"-1s", "1000y", "x"},
		"stats":          {"all"},
		"lookback_delta": {"-1s", "1000y"},
		"scrapePool":     {"", "../../../../etc/passwd"},
		"labels":         {"{", `{"a":1}`, "null", ""},
		"metric":         {"", nest},
		"type":           {"x"},
	}
	pathValues := map[string][]string{
		":name": {"pop", "__name__", url.PathEscape("a/b"), "%25ff", strings.Repeat("x", 10000)},
		"*path": {"query", "a/b/../../c"},
	}

	ctx := context.Background()
	var n int
	var slowest time.Duration
	var slowestReq string
	start := time.Now()
	check := func(method, route, u string, params url.Values, header ...string) {
		t.Helper()
		n++
		reqCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		t0 := time.Now()
		code, body, err := call(reqCtx, method, u, params, header...)
		if d := time.Since(t0); d > slowest {
			slowest, slowestReq = d, fmt.Sprintf("%s %s %.80s", method, route, params.Encode())
		}
		if err != nil {
			t.Errorf("%s %s (%.200s): %v", method, route, params.Encode(), err)
			return
		}
		if code < 500 {
			return
		}
		var rep apiReply
		if json.Unmarshal(body, &rep) != nil || rep.Status != "error" || rep.Error == "" {
			t.Errorf("%s %s (%.200s): %d without a JSON error: %.300s", method, route, params.Encode(), code, body)
		}
	}
	for _, route := range routes {
		paths := []string{route}
		for param, vals := range pathValues {
			if strings.Contains(route, param) {
				paths = nil
				for _, v := range vals {
					paths = append(paths, strings.Replace(route, param, v, 1))
				}
			}
		}
		for _, p := range paths {
			u := base + p
			for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodHead} {
				check(method, route, u, valid)
				check(method, route, u, nil)
				// A browser's cross-origin request (Grafana in direct access mode).
				check(method, route, u, valid, "Origin", "http://elsewhere.example")
			}
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				for key, vals := range hostile {
					for _, v := range vals {
						params := url.Values{}
						for k, vv := range valid {
							params[k] = vv
						}
						params[key] = []string{v}
						check(method, route, u, params)
					}
				}
			}
		}
	}
	t.Logf("%d routes, %d requests in %s; slowest %s: %s", len(routes), n, time.Since(start).Round(time.Millisecond),
		slowest.Round(time.Millisecond), slowestReq)
	if l := logs.String(); strings.Contains(l, "panic") {
		t.Errorf("net/http recovered a panic:\n%s", l)
	}

	// Still serving.
	code, body, err := call(ctx, http.MethodGet, base+"/query", valid)
	var rep apiReply
	if err != nil || code != 200 || json.Unmarshal(body, &rep) != nil || rep.Status != "success" {
		t.Fatalf("valid query after the sweep: %d %v %.300s", code, err, body)
	}
}

// TestAPIRoutesThatCrashedAnswer: the routes the 2026-12-01 sweep found dereferencing
// nil answer as Prometheus would.
func TestAPIRoutesThatCrashedAnswer(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := startRuler(t, sli.New(sli.Deps{Inventory: inventory.Static(testInventory())}), reg)
	base, _ := apiServer(t, r)
	ctx := context.Background()

	code, body, err := call(ctx, http.MethodGet, base+"/notifications", nil)
	var rep apiReply
	if err != nil || code != 200 || json.Unmarshal(body, &rep) != nil || rep.Status != "success" || string(rep.Data) != "[]" {
		t.Errorf("notifications: %d %v %s", code, err, body)
	}
	// A failed reload is a notification, cleared by the next good one.
	bad := testConfig(t)
	bad.SpecFiles = []string{"/nonexistent/spec.yaml"}
	if err := r.ApplyConfig(bad); err == nil {
		t.Fatal("reload of a missing spec succeeded")
	}
	if _, body, _ := call(ctx, http.MethodGet, base+"/notifications", nil); !strings.Contains(string(body), "Configuration reload has failed") {
		t.Errorf("notifications after a failed reload: %s", body)
	}
	if err := r.ApplyConfig(r.cfg); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := call(ctx, http.MethodGet, base+"/notifications", nil); strings.Contains(string(body), "Configuration reload has failed") {
		t.Errorf("notifications after a good reload: %s", body)
	}

	// The live stream opens (and a reload failure arrives on it).
	streamCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(streamCtx, http.MethodGet, base+"/notifications/live", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("notifications/live: %v %v", resp, err)
	}
	if err := r.ApplyConfig(bad); err == nil {
		t.Fatal("reload of a missing spec succeeded")
	}
	line := make([]byte, 200)
	k, _ := io.ReadAtLeast(resp.Body, line, len("data: {}"))
	resp.Body.Close()
	if !strings.Contains(string(line[:k]), "Configuration reload has failed") {
		t.Errorf("notifications/live: %q", line[:k])
	}

	code, body, err = call(ctx, http.MethodGet, base+"/targets/relabel_steps", url.Values{"scrapePool": {"sli"}, "labels": {`{"job":"sli"}`}})
	if err != nil || code != http.StatusBadRequest || json.Unmarshal(body, &rep) != nil || !strings.Contains(rep.Error, `no scrape pool "sli"`) {
		t.Errorf("targets/relabel_steps: %d %v %s", code, err, body)
	}
	code, body, err = call(ctx, http.MethodGet, base+"/scrape_pools/config", url.Values{"scrapePool": {"sli"}})
	if err != nil || code != http.StatusBadRequest || json.Unmarshal(body, &rep) != nil || !strings.Contains(rep.Error, `no scrape pool "sli"`) {
		t.Errorf("scrape_pools/config: %d %v %s", code, err, body)
	}
}
