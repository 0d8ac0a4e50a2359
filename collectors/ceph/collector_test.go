package ceph

import (
	"context"
	"gopkg.in/yaml.v3"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/meridianhq/meridian/pipeline"
)

// TestMgrFaults serves the real Pacific capture over HTTP the way ceph-mgr does, then
// answers 503 (stale cache), hangs past the timeout, and fails over to a second mgr: each
// fault is counted by reason, emits nothing, and leaves the previous state intact so the
// next good scrape's deltas span the gap.
func TestMgrFaults(t *testing.T) {
	body := readTestdata(t, "metrics.txt")
	var (
		mu   sync.Mutex
		mode = "ok"
		cur  = body
	)
	mgr := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		m, b := mode, cur
		mu.Unlock()
		switch m {
		case "503":
			http.Error(w, "stale cache", http.StatusServiceUnavailable)
		case "hang":
			<-r.Context().Done()
		case "empty": // a standby mgr with standby_behaviour=error answers like this
			w.WriteHeader(http.StatusOK)
		default:
			_, _ = w.Write(b)
		}
	}))
	defer mgr.Close()
	standby := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer standby.Close()
	set := func(m string, b []byte) { mu.Lock(); mode, cur = m, b; mu.Unlock() }

	var cfg Config
	cfg.RegisterFlags(flagSet())
	cfg.Interval, cfg.Timeout = time.Second, 200*time.Millisecond
	cfg.MgrURLs = []string{mgr.URL, standby.URL}
	var recs []pipeline.Record
	app := pipeline.AppenderFunc(func(_ context.Context, r ...pipeline.Record) error { recs = append(recs, r...); return nil })
	c, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(), Appender: app})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	c.now = func() time.Time { return now }
	step := func(d time.Duration) []pipeline.Record {
		recs = nil
		now = now.Add(d)
		if err := c.iteration(context.Background()); err != nil {
			t.Fatal(err)
		}
		return recs
	}
	if got := step(0); len(got) != 3+1+2 {
		t.Fatalf("first scrape: %d records, want 3 OSDs + health + 2 pools", len(got))
	}
	for _, m := range []string{"503", "hang"} {
		set(m, nil)
		if got := step(10 * time.Second); len(got) != 0 {
			t.Fatalf("%s: %d records emitted", m, len(got))
		}
	}
	errs := func(url, reason string) float64 {
		return testutil.ToFloat64(c.metrics.Errors.WithLabelValues(url, reason))
	}
	if errs(mgr.URL, "http_503") != 1 || errs(mgr.URL, "timeout") != 1 || errs(standby.URL, "error") != 2 {
		t.Fatalf("errors: 503 %v, timeout %v, standby %v", errs(mgr.URL, "http_503"), errs(mgr.URL, "timeout"), errs(standby.URL, "error"))
	}
	// osd.0 wrote 3000 more ops taking 6 s more in total, over the 30 s since the last good scrape.
	next := strings.Replace(string(body), `ceph_osd_op_w_latency_count{ceph_daemon="osd.0"} 32657.0`, `ceph_osd_op_w_latency_count{ceph_daemon="osd.0"} 35657.0`, 1)
	next = strings.Replace(next, `ceph_osd_op_w_latency_sum{ceph_daemon="osd.0"} 97.151417282`, `ceph_osd_op_w_latency_sum{ceph_daemon="osd.0"} 103.151417282`, 1)
	set("ok", []byte(next))
	got := step(10 * time.Second)
	o := got[0].(*pipeline.OSDStat)
	if o.OSD != 0 || o.WriteLatencyMs < 1.999 || o.WriteLatencyMs > 2.001 {
		t.Fatalf("after the faults: osd.%d write latency %v ms, want 2", o.OSD, o.WriteLatencyMs)
	}
	// The active mgr goes empty: the standby is tried and is empty too: nothing emitted.
	set("empty", nil)
	if got := step(10 * time.Second); len(got) != 0 || errs(mgr.URL, "error") != 1 {
		t.Fatalf("empty exposition: %d records, errors %v", len(got), errs(mgr.URL, "error"))
	}
}

func TestConfigYAML(t *testing.T) {
	var cfg Config
	cfg.RegisterFlags(flagSet())
	in := "interval: 30s\ncluster: vault-nyc\nmgr_urls: http://10.0.0.1:9283/metrics,http://10.0.0.2:9283/metrics\ncommand: ceph --conf /etc/ceph/ceph.conf\n"
	if err := yaml.Unmarshal([]byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Interval != 30*time.Second || cfg.Cluster != "vault-nyc" || len(cfg.MgrURLs) != 2 || cfg.Timeout != 10*time.Second {
		t.Fatalf("config %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.MgrURLs = []string{"10.0.0.1:9283"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ceph.mgr-urls") {
		t.Fatalf("error %v does not name ceph.mgr-urls", err)
	}
}

// rawSeries scrapes body once through a mgr over HTTP and gathers the raw series.
func rawSeries(t *testing.T, body []byte) (*Collector, string, []*dto.MetricFamily) {
	t.Helper()
	mgr := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	t.Cleanup(mgr.Close)
	var cfg Config
	cfg.RegisterFlags(flagSet())
	cfg.MgrURLs = []string{mgr.URL}
	app := pipeline.AppenderFunc(func(context.Context, ...pipeline.Record) error { return nil })
	c, err := New(cfg, Deps{Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(), Appender: app})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.iteration(context.Background()); err != nil {
		t.Fatal(err)
	}
	mfs, err := c.RawSeries().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return c, mgr.URL, mfs
}

// series renders the gathered families as sorted `name{labels} value` lines.
func series(mfs []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetUntyped().GetValue()
		}
	}
	return out
}

// The Pacific mgr exports ceph_pool_objects_repaired three times (HELP and TYPE with no
// sample, then once per pool, each with its own HELP): Prometheus ingests every sample of
// it, and so must the raw series the ruler stores, along with every family after it.
func TestRawSeriesRepeatedFamily(t *testing.T) {
	body := readTestdata(t, "metrics.txt")
	if n := strings.Count(string(body), "# HELP ceph_pool_objects_repaired "); n != 3 {
		t.Fatalf("the capture holds %d HELP lines of ceph_pool_objects_repaired, want 3", n)
	}
	_, _, mfs := rawSeries(t, body)
	got := series(mfs)
	want := 0
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "ceph_") {
			want++
		}
	}
	if len(got) != want {
		t.Errorf("%d raw series, want the capture's %d", len(got), want)
	}
	for _, s := range []string{
		`ceph_pool_objects_repaired{poolid="1"}`,
		`ceph_pool_objects_repaired{poolid="2"}`, // the capture's last line
		`ceph_osd_stat_bytes{ceph_daemon="osd.2"}`,
	} {
		if _, ok := got[s]; !ok {
			t.Errorf("%s missing", s)
		}
	}
	for i := 1; i < len(mfs); i++ {
		if mfs[i-1].GetName() >= mfs[i].GetName() {
			t.Fatalf("families not grouped and sorted: %s before %s", mfs[i-1].GetName(), mfs[i].GetName())
		}
	}
}

// A malformed line loses only its own series: the families around it are stored, and the
// line is counted once, at the scrape, under the mgr's URL.
func TestRawSeriesBadLineKeepsTheRest(t *testing.T) {
	body := []byte(`# HELP ceph_health_status Cluster health status
# TYPE ceph_health_status untyped
ceph_health_status 0.0
# HELP ceph_osd_up OSD status up
# TYPE ceph_osd_up untyped
ceph_osd_up{ceph_daemon="osd.0"} 1.0
ceph_osd_up{ceph_daemon="osd.1" 1.0
ceph_osd_up{ceph_daemon="osd.2"} 0.0
# HELP ceph_osd_in OSD status in
# TYPE ceph_osd_in untyped
ceph_osd_in{ceph_daemon="osd.0"} 1.0
`)
	c, url, mfs := rawSeries(t, body)
	got := series(mfs)
	want := map[string]float64{
		`ceph_health_status{}`:             0,
		`ceph_osd_up{ceph_daemon="osd.0"}`: 1,
		`ceph_osd_up{ceph_daemon="osd.2"}`: 0,
		`ceph_osd_in{ceph_daemon="osd.0"}`: 1,
	}
	if len(got) != len(want) {
		t.Errorf("raw series %v, want %v", got, want)
	}
	for s, v := range want {
		if g, ok := got[s]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", s, g, ok, v)
		}
	}
	if n := testutil.ToFloat64(c.metrics.ParseErrors.WithLabelValues(url)); n != 1 {
		t.Errorf("parse errors under %s: %v, want 1", url, n)
	}
}
