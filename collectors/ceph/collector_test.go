package ceph

import (
	"context"
	"gopkg.in/yaml.v3"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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
