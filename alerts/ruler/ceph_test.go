package ruler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/collectors/ceph"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/pipeline"
)

// Operators' Rook / ceph-mixin rules, loaded as rule_files, evaluate over the raw series
// of Meridian's Ceph collector in the ruler's store: a real mgr exposition with one of
// three OSDs down makes the mixin's CephOSDDownHigh (33% down, no `for`) fire, and every
// one of the mixin's rules evaluates without error.
func TestRookRulesOverRawCephSeries(t *testing.T) {
	metrics, err := os.ReadFile("../../testdata/ceph/metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	exposition := strings.Replace(string(metrics), `ceph_osd_up{ceph_daemon="osd.2"} 1.0`, `ceph_osd_up{ceph_daemon="osd.2"} 0.0`, 1)
	mgr := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, exposition) }))
	t.Cleanup(mgr.Close)

	var cc ceph.Config
	cc.RegisterFlags(flagSet())
	cc.MgrURLs = []string{mgr.URL + "/metrics"}
	cc.Interval, cc.Timeout = 200*time.Millisecond, 200*time.Millisecond
	col, err := ceph.New(cc, ceph.Deps{Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(), Appender: pipeline.AppenderFunc(func(context.Context, ...pipeline.Record) error { return nil })})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), col); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), col) })

	cfg := testConfig(t)
	cfg.RuleFiles = []string{"../../testdata/ceph/ceph-mixin-prometheus_alerts.yaml"}
	// The mixin's NVMeoFHostKeepAliveTimeout holds a step-less [24h:] subquery, which
	// runs at the evaluation interval: 8,640 steps at the default 10 s, within the
	// default limit; at this test's 500 ms, 172,800.
	cfg.QueryMaxSubquerySteps = 200_000
	r, err := New(cfg, Deps{SLI: sli.New(sli.Deps{}), Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store(col.RawSeries(), ""); err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), r) })

	wait.Until(t, 20*time.Second, "the mixin's CephOSDDownHigh firing", func() bool { return hasAlert(r.Firing(), "CephOSDDownHigh") })
	mixin := 0
	for _, g := range r.manager.RuleGroups() {
		if !strings.HasSuffix(g.File(), "ceph-mixin-prometheus_alerts.yaml") {
			continue
		}
		for _, rule := range g.Rules() {
			mixin++
			if err := rule.LastError(); err != nil {
				t.Errorf("%s: %v", rule.Name(), err)
			}
		}
	}
	if mixin < 100 {
		t.Fatalf("%d mixin rules loaded, want the whole file", mixin)
	}
	// The mgr repeats ceph_pool_objects_repaired, HELP and all, once per pool: both pools'
	// series and every family after the repeats (ceph_osd_stat_bytes) are stored.
	base, _ := apiServer(t, r)
	for sel, want := range map[string]string{"ceph_pool_objects_repaired": `"2"`, "ceph_osd_stat_bytes": `"3"`} {
		_, rep, _ := queryAPI(t, base, "/query", url.Values{"query": {"count(" + sel + ")"}})
		if !strings.Contains(string(rep.Data), want) {
			t.Errorf("count(%s): %s, want %s", sel, rep.Data, want)
		}
	}
	if n := testutil.ToFloat64(r.storeErrors); n != 0 {
		t.Errorf("%v failed gathers of the raw series", n)
	}
}

// A gatherer failing in part (here one family it could not gather) has the families it
// did gather stored, and the failure counted.
func TestStorePartialGather(t *testing.T) {
	cfg := testConfig(t)
	cfg.BuiltinRules = false
	r, err := New(cfg, Deps{SLI: sli.New(sli.Deps{}), Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	good := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ceph_good", Help: "gathered"})
	good.Set(1)
	own := prometheus.NewRegistry()
	own.MustRegister(good)
	if err := r.Store(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, _ := own.Gather()
		return mfs, errors.New("family ceph_bad: malformed")
	}), ""); err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), r) })
	base, _ := apiServer(t, r)
	wait.Until(t, 10*time.Second, "the good family stored", func() bool {
		_, rep, _ := queryAPI(t, base, "/query", url.Values{"query": {"ceph_good"}})
		return strings.Contains(string(rep.Data), `"1"]`)
	})
	if n := testutil.ToFloat64(r.storeErrors); n < 1 {
		t.Errorf("%v failed gathers counted, want at least 1", n)
	}
}

// Stored series are those whose family name matches, up to store_max_series per tick:
// a family that would pass the bound is left out whole and counted.
func TestStoreSelectsAndBounds(t *testing.T) {
	own := prometheus.NewRegistry()
	kept := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_kept", Help: "kept"}, []string{"x"})
	big := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_big", Help: "over the bound"}, []string{"x"})
	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_other", Help: "not selected"})
	own.MustRegister(kept, big, other)
	kept.WithLabelValues("a").Set(1)
	kept.WithLabelValues("b").Set(2)
	for _, x := range []string{"a", "b", "c"} {
		big.WithLabelValues(x).Set(3)
	}
	other.Set(4)

	cfg := testConfig(t)
	cfg.BuiltinRules = false
	cfg.StoreMaxSeries = 2
	r, err := New(cfg, Deps{SLI: sli.New(sli.Deps{}), Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store(own, "meridian_(kept|big)"); err != nil {
		t.Fatal(err)
	}
	if err := r.Store(own, "("); err == nil {
		t.Fatal("a bad expression was accepted")
	}
	if err := services.StartAndAwaitRunning(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), r) })
	base, _ := apiServer(t, r)
	count := func(sel string) string {
		_, rep, _ := queryAPI(t, base, "/query", url.Values{"query": {"count(" + sel + ")"}})
		return string(rep.Data)
	}
	wait.Until(t, 10*time.Second, "the selected family stored", func() bool { return strings.Contains(count("meridian_kept"), `"2"`) })
	if got := count("meridian_big"); strings.Contains(got, `"3"`) {
		t.Errorf("the family past the bound was stored: %s", got)
	}
	if got := count("meridian_other"); strings.Contains(got, `"1"`) {
		t.Errorf("an unselected family was stored: %s", got)
	}
	if got := testutil.ToFloat64(r.storeDropped); got < 3 {
		t.Errorf("dropped %v samples, want the big family's 3 per tick", got)
	}
}
