package ruler

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/collectors/ceph"
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
	col, err := ceph.New(cc, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), pipeline.AppenderFunc(func(context.Context, ...pipeline.Record) error { return nil }), nil)
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
	r, err := New(cfg, sli.New(nil), prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
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

	waitFor(t, 20*time.Second, "the mixin's CephOSDDownHigh firing", func() bool { return hasAlert(r.Firing(), "CephOSDDownHigh") })
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
}
