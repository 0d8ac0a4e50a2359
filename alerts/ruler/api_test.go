package ruler

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"

	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// startPrometheus runs Debian's prometheus scraping target every second and evaluating
// ruleFile, with job and instance dropped so its series equal the ruler's.
func startPrometheus(t *testing.T, target, ruleFile string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: install Debian package prometheus (make apt-test)")
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: sli
    static_configs: [{targets: [%q]}]
    metric_relabel_configs:
      - action: labeldrop
        regex: job|instance
`, ruleFile, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	port := amtest.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	addr := fmt.Sprintf("http://127.0.0.1:%d", port)
	wait.Until(t, 30*time.Second, "prometheus ready", func() bool {
		resp, err := http.Get(addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return addr
}

func apiClient(t *testing.T, addr string) promv1.API {
	t.Helper()
	c, err := api.NewClient(api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	return promv1.NewAPI(c)
}

// TestQueryAPIMatchesPrometheus serves the same static SLI series to a real Prometheus
// (by scraping) and to the ruler (by appending), loads the same generated rules into
// both, and asks both the same questions through Prometheus's own Go API client: the
// answers must be equal.
func TestQueryAPIMatchesPrometheus(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := sli.New(sli.Deps{Inventory: inventory.Static(testInventory())})
	// Static counters: 10 probes of lon with 3 failures, 10 clean probes of par.
	now := time.Now()
	for i := range 10 {
		for _, pop := range []string{"lon", "par"} {
			s.Consume([]pipeline.Record{&pipeline.Probe{M: pipeline.Meta{Time: now}, Vantage: "nyc-1", POP: pop, Service: "api",
				Success: pop == "par" || i >= 3, RTT: time.Duration(10*(i+1)) * time.Millisecond}})
		}
	}
	exposed := prometheus.NewRegistry()
	exposed.MustRegister(s)
	target := httptest.NewServer(promhttp.HandlerFor(exposed, promhttp.HandlerOpts{}))
	t.Cleanup(target.Close)

	cfg := testConfig(t)
	cfg.BuiltinRules = false // the Prometheus compared with loads the SLO rules only
	r := startRulerConfig(t, s, reg, cfg)
	ours := httptest.NewServer(http.StripPrefix(APIPrefix, r.Handler()))
	t.Cleanup(ours.Close)
	u, _ := url.Parse(target.URL)
	theirs := startPrometheus(t, u.Host, r.RuleFiles()[0])

	mine, prom := apiClient(t, ours.URL+APIPrefix), apiClient(t, theirs)
	ctx := context.Background()

	// Both hold the series and have evaluated the rules a few times.
	wait.Until(t, 30*time.Second, "both to have recorded SLI ratios", func() bool {
		for _, c := range []promv1.API{mine, prom} {
			v, _, err := c.Query(ctx, `count_over_time(slo:sli_error:ratio_rate5s{pop="lon"}[10s]) >= 4`, time.Now())
			if err != nil || len(v.(model.Vector)) == 0 {
				return false
			}
		}
		return testutil.ToFloat64(r.appended) > 0
	})

	instant := []string{
		`sum by (pop, site) (meridian_sli_probe_requests_total)`,
		`meridian_sli_probe_errors_total / ignoring() meridian_sli_probe_requests_total`,
		`histogram_quantile(0.9, sum by (le, pop) (meridian_sli_probe_duration_seconds_bucket))`,
		`slo:objective:ratio`,
		`slo:sli_error:ratio_rate5s`,
		`count by (__name__) ({__name__=~"meridian_sli_.*"})`,
	}
	at := time.Now()
	for _, q := range instant {
		a, _, err := mine.Query(ctx, q, at)
		if err != nil {
			t.Fatalf("ours %s: %v", q, err)
		}
		b, _, err := prom.Query(ctx, q, at)
		if err != nil {
			t.Fatalf("prometheus %s: %v", q, err)
		}
		if len(a.(model.Vector)) == 0 || !sameVector(a.(model.Vector), b.(model.Vector)) {
			t.Errorf("query %s:\n ours %v\n prom %v", q, a, b)
		}
	}

	// A range over the last seconds of static counters: same points at the same steps.
	rng := promv1.Range{Start: at.Add(-3 * time.Second).Truncate(time.Second), End: at.Truncate(time.Second), Step: time.Second}
	a, _, err := mine.QueryRange(ctx, `sum by (pop) (meridian_sli_probe_errors_total)`, rng)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := prom.QueryRange(ctx, `sum by (pop) (meridian_sli_probe_errors_total)`, rng)
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() || len(a.(model.Matrix)) != 2 {
		t.Errorf("query_range:\n ours %v\n prom %v", a, b)
	}

	match := []string{`{__name__=~"meridian_sli_probe_.*"}`}
	sa, _, err := mine.Series(ctx, match, at.Add(-time.Minute), at)
	if err != nil {
		t.Fatal(err)
	}
	sb, _, err := prom.Series(ctx, match, at.Add(-time.Minute), at)
	if err != nil {
		t.Fatal(err)
	}
	if len(sa) == 0 || !sameSets(sa, sb) {
		t.Errorf("series:\n ours %v\n prom %v", sa, sb)
	}
	la, _, _ := mine.LabelNames(ctx, match, at.Add(-time.Minute), at)
	lb, _, _ := prom.LabelNames(ctx, match, at.Add(-time.Minute), at)
	if len(la) == 0 || !slices.Equal(la, lb) {
		t.Errorf("labels: ours %v, prom %v", la, lb)
	}
	va, _, _ := mine.LabelValues(ctx, "pop", match, at.Add(-time.Minute), at)
	vb, _, _ := prom.LabelValues(ctx, "pop", match, at.Add(-time.Minute), at)
	if !reflect.DeepEqual(va, vb) || len(va) != 2 {
		t.Errorf("label/pop/values: ours %v, prom %v", va, vb)
	}

	// Rules: the same groups and rules, healthy in both.
	ra, err := mine.Rules(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := prom.Rules(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ga, gb := ruleNames(ra), ruleNames(rb); len(ga) == 0 || !slices.Equal(ga, gb) {
		t.Errorf("rules:\n ours %v\n prom %v", ga, gb)
	}
	// Now lon fails every probe: both fire the same page.
	var failing atomic.Bool
	failing.Store(true)
	prober(t, s, &failing)
	wait.Until(t, 30*time.Second, "the same alerts in both", func() bool {
		aa, err1 := mine.Alerts(ctx)
		ab, err2 := prom.Alerts(ctx)
		return err1 == nil && err2 == nil && len(aa.Alerts) == 1 && alertKeys(aa) == alertKeys(ab)
	})
}

func sameVector(a, b model.Vector) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(v model.Vector) map[model.Fingerprint]model.SampleValue {
		m := map[model.Fingerprint]model.SampleValue{}
		for _, s := range v {
			m[s.Metric.Fingerprint()] = s.Value
		}
		return m
	}
	ka, kb := key(a), key(b)
	for fp, v := range ka {
		w, ok := kb[fp]
		if !ok || !(v == w || (v != v && w != w)) {
			return false
		}
	}
	return true
}

func sameSets(a, b []model.LabelSet) bool {
	fps := func(s []model.LabelSet) []model.Fingerprint {
		var out []model.Fingerprint
		for _, l := range s {
			out = append(out, l.Fingerprint())
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(fps(a), fps(b))
}

func ruleNames(r promv1.RulesResult) []string {
	var out []string
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			switch rule := rule.(type) {
			case promv1.RecordingRule:
				out = append(out, g.Name+"/"+rule.Name+"/"+string(rule.Health))
			case promv1.AlertingRule:
				out = append(out, g.Name+"/"+rule.Name+"/"+string(rule.Health))
			}
		}
	}
	slices.Sort(out)
	return out
}

func alertKeys(r promv1.AlertsResult) string {
	var out []string
	for _, a := range r.Alerts {
		out = append(out, string(a.State)+" "+a.Labels.String())
	}
	slices.Sort(out)
	return fmt.Sprint(out)
}
