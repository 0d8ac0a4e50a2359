package ruler

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

const fastSpecs = "../../testdata/slo/ruler"

func flagSet() *flag.FlagSet { return flag.NewFlagSet("test", flag.ContinueOnError) }

func testInventory() *inventory.Inventory {
	return &inventory.Inventory{POPs: []inventory.POP{{Name: "lon", Site: "london"}, {Name: "par", Site: "paris"}}}
}

// testConfig is a ruler over the fast test spec with the given Alertmanager URLs.
func testConfig(t *testing.T, amURLs ...string) Config {
	t.Helper()
	var cfg Config
	cfg.RegisterFlags(flagSet())
	cfg.SpecFiles = []string{filepath.Join(fastSpecs, "fast-pop.yaml")}
	cfg.WindowFiles = []string{filepath.Join(fastSpecs, "fast-windows.yaml")}
	cfg.EvaluationInterval = 500 * time.Millisecond
	cfg.ResendDelay = time.Second
	cfg.AlertmanagerURLs = amURLs
	cfg.ExternalLabels = Labels{"meridian": "test"}
	cfg.DataDir = t.TempDir()
	return cfg
}

// startRuler runs a ruler of testConfig(amURLs).
func startRuler(t *testing.T, s *sli.SLI, reg *prometheus.Registry, amURLs ...string) *Ruler {
	t.Helper()
	return startRulerConfig(t, s, reg, testConfig(t, amURLs...))
}

// startRulerConfig runs a ruler of cfg; setup is called before it starts.
func startRulerConfig(t *testing.T, s *sli.SLI, reg *prometheus.Registry, cfg Config, setup ...func(*Ruler)) *Ruler {
	t.Helper()
	r, err := New(cfg, Deps{SLI: s, Registerer: reg, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(r)
	}
	// The start context is the service's lifetime context in dskit: not a timeout.
	if err := services.StartAndAwaitRunning(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := services.StopAndAwaitTerminated(context.Background(), r); err != nil {
			t.Error(err)
		}
	})
	return r
}

// prober feeds probe records of two POPs to s and also; lon fails while failing is set.
func prober(t *testing.T, s *sli.SLI, failing *atomic.Bool, also ...pipeline.Consumer) {
	feed(t, func(now time.Time) []pipeline.Record {
		var recs []pipeline.Record
		for _, pop := range []string{"lon", "par"} {
			ok := pop != "lon" || !failing.Load()
			recs = append(recs, &pipeline.Probe{M: pipeline.Meta{Time: now, Site: "nyc"}, Vantage: "nyc-1", Method: "http",
				POP: pop, Service: "api", Success: ok, RTT: 30 * time.Millisecond})
		}
		return recs
	}, append([]pipeline.Consumer{s}, also...)...)
}

// feed gives the records next returns for now to every consumer, every 20ms until the
// test ends.
func feed(t *testing.T, next func(now time.Time) []pipeline.Record, to ...pipeline.Consumer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				recs := next(now)
				for _, c := range to {
					c.Consume(recs)
				}
			}
		}
	}()
}

func pagesFor(src alerts.Source, pop string) []alerts.Alert {
	var out []alerts.Alert
	for _, a := range src.Firing() {
		if a.Severity == alerts.SeverityPage && a.Labels["pop"] == pop {
			out = append(out, a)
		}
	}
	return out
}

// TestPageThroughAlertmanager: a POP's probes start failing, the page reaches a real
// Alertmanager's webhook receiver grouped by alertname and pop, with the external
// labels; steering sees it in Firing; the probes recover and the resolve arrives too.
// Alertmanager is down when the alert first fires: the ruler keeps re-sending and the
// page is delivered once Alertmanager is up.
func TestPageThroughAlertmanager(t *testing.T) {
	hook := amtest.NewWebhook(t)
	amPort := amtest.FreePort(t)
	reg := prometheus.NewRegistry()
	s := sli.New(sli.Deps{Inventory: inventory.Static(testInventory())})
	reg.MustRegister(s)
	var failing atomic.Bool
	prober(t, s, &failing)
	r := startRuler(t, s, reg, fmt.Sprintf("http://127.0.0.1:%d", amPort))

	// Healthy: no page for either POP.
	wait.Until(t, 10*time.Second, "SLI series in the TSDB", func() bool {
		return testutil.ToFloat64(r.appended) > 0
	})
	if p := pagesFor(r, "lon"); len(p) != 0 {
		t.Fatalf("page before any failure: %+v", p)
	}

	failing.Store(true)
	start := time.Now()
	wait.Until(t, 30*time.Second, "page for lon in Firing()", func() bool { return len(pagesFor(r, "lon")) == 1 })
	t.Logf("page fired %s after lon started failing", time.Since(start).Round(100*time.Millisecond))
	a := pagesFor(r, "lon")[0]
	for k, v := range map[string]string{"pop": "lon", "site": "london", "service": "api", "slo": "availability", "sloth_slo": "availability"} {
		if a.Labels[k] != v {
			t.Errorf("alert label %s=%q, want %q (labels %v)", k, a.Labels[k], v, a.Labels)
		}
	}
	if a.Name != "MeridianPOPAvailability" {
		t.Errorf("alert name %q", a.Name)
	}
	if len(pagesFor(r, "par")) != 0 {
		t.Errorf("healthy POP par paged")
	}

	// Alertmanager is down: sends fail and are counted, the alert stays firing.
	wait.Until(t, 15*time.Second, "a failed send to the absent Alertmanager", func() bool {
		return promtest.Sum(t, reg, "prometheus_notifications_errors_total") > 0
	})
	amtest.Run(t, amPort, hook)
	wait.Until(t, 30*time.Second, "firing notification at the webhook", func() bool {
		_, ok := hook.Find("firing", map[string]string{"alertname": "MeridianPOPAvailability", "pop": "lon"})
		return ok
	})
	m, _ := hook.Find("firing", map[string]string{"alertname": "MeridianPOPAvailability", "pop": "lon"})
	if m.GroupLabels["pop"] != "lon" || m.GroupLabels["alertname"] != "MeridianPOPAvailability" {
		t.Errorf("group labels %v", m.GroupLabels)
	}
	if l := m.Alerts[0].Labels; l["meridian"] != "test" || l["sloth_severity"] != "page" || l["severity"] != "critical" {
		t.Errorf("notified labels %v: want external label meridian=test and page severity", l)
	}

	failing.Store(false)
	start = time.Now()
	wait.Until(t, 60*time.Second, "resolved notification at the webhook", func() bool {
		_, ok := hook.Find("resolved", map[string]string{"alertname": "MeridianPOPAvailability", "pop": "lon"})
		return ok
	})
	t.Logf("resolve delivered %s after lon recovered", time.Since(start).Round(100*time.Millisecond))
	if p := pagesFor(r, "lon"); len(p) != 0 {
		t.Errorf("page still firing after resolve: %+v", p)
	}
}

// TestApplyConfig reloads a running ruler: Alertmanagers and external labels added by a
// reload get the page that was already firing, whose alert state (ActiveAt) the reload
// keeps; a spec that does not parse leaves the ruler as it was.
func TestApplyConfig(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := sli.New(sli.Deps{Inventory: inventory.Static(testInventory())})
	reg.MustRegister(s)
	var failing atomic.Bool
	failing.Store(true)
	prober(t, s, &failing)
	r := startRuler(t, s, reg) // no Alertmanager yet
	wait.Until(t, 30*time.Second, "page for lon in Firing()", func() bool { return len(pagesFor(r, "lon")) == 1 })
	active := pagesFor(r, "lon")[0].ActiveAt

	amURL, hook := amtest.Start(t)
	cfg := r.cfg
	cfg.AlertmanagerURLs = []string{amURL}
	cfg.ExternalLabels = Labels{"meridian": "reloaded"}
	if err := r.ApplyConfig(cfg); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 30*time.Second, "the page at the Alertmanager added by the reload", func() bool {
		m, ok := hook.Find("firing", map[string]string{"alertname": "MeridianPOPAvailability", "pop": "lon"})
		return ok && m.Alerts[0].Labels["meridian"] == "reloaded"
	})
	if p := pagesFor(r, "lon"); len(p) != 1 || !p[0].ActiveAt.Equal(active) {
		t.Errorf("after the reload: pages %+v, want one active since %v", p, active)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: prometheus/v1\nslos: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	broken := cfg
	broken.SpecFiles = []string{bad}
	if err := r.ApplyConfig(broken); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("ApplyConfig with a broken spec: %v, want an error naming it", err)
	}
	if p := pagesFor(r, "lon"); len(p) != 1 || !p[0].ActiveAt.Equal(active) {
		t.Errorf("after a failed reload: pages %+v", p)
	}
}

func TestConfigYAML(t *testing.T) {
	var c Config
	c.RegisterFlags(flagSet())
	in := `
spec_files: [alerts/slos/pop.yaml, alerts/slos/ceph.yaml]
alertmanager_urls: http://127.0.0.1:9093,http://127.0.0.1:9094
external_labels: {region: eu}
evaluation_interval: 15s
query_max_subquery_steps: 500
`
	if err := yaml.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.SpecFiles) != 2 || len(c.AlertmanagerURLs) != 2 || c.ExternalLabels["region"] != "eu" || c.EvaluationInterval != 15*time.Second || c.DataDir != "data/ruler" ||
		c.QueryMaxSubquerySteps != 500 || c.QueryMaxLength != 8<<10 {
		t.Errorf("config %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

func TestConfigValidate(t *testing.T) {
	var base Config
	base.RegisterFlags(flagSet())
	if err := base.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for field, mut := range map[string]func(*Config){
		"ruler.evaluation_interval":      func(c *Config) { c.EvaluationInterval = 0 },
		"ruler.alertmanager_urls":        func(c *Config) { c.AlertmanagerURLs = []string{"127.0.0.1:9093"} },
		"ruler.external_labels":          func(c *Config) { c.ExternalLabels = Labels{"bad-name": "x"} },
		"ruler.data_dir":                 func(c *Config) { c.DataDir = "" },
		"ruler.query_timeout":            func(c *Config) { c.QueryTimeout = 0 },
		"ruler.query_max_concurrency":    func(c *Config) { c.QueryMaxConcurrency = 0 },
		"ruler.query_max_samples":        func(c *Config) { c.QueryMaxSamples = -1 },
		"ruler.query_max_length":         func(c *Config) { c.QueryMaxLength = 0 },
		"ruler.query_max_subquery_steps": func(c *Config) { c.QueryMaxSubquerySteps = 0 },
	} {
		c := base
		mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
}
