package haproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// startHAProxy runs Debian's haproxy in the foreground in front of backend, with the
// exporter and a stats socket; it returns the traffic frontend's address, the exporter
// URL and the socket path.
func startHAProxy(t *testing.T, backend string) (front, metrics, socket string) {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("haproxy not found: install the Debian package haproxy (make apt-test)")
	}
	dir := t.TempDir()
	socket = filepath.Join(dir, "admin.sock")
	front = fmt.Sprintf("127.0.0.1:%d", amtest.FreePort(t))
	metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", amtest.FreePort(t))
	cfg := fmt.Sprintf(`global
  stats socket %s mode 600 level admin
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend stats
  bind %s
  http-request use-service prometheus-exporter if { path /metrics }
frontend api
  bind %s
  default_backend pop
backend pop
  server s1 %s check inter 1s
`, socket, metrics[len("http://"):len(metrics)-len("/metrics")], front, backend)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("haproxy", "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	wait.Until(t, 10*time.Second, "haproxy's exporter answers", func() bool {
		resp, err := http.Get(metrics)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return front, metrics, socket
}

// load sends rate requests per second to url, each on a new connection (one session),
// until ctx ends; at most 64 are in flight, so a slow peer cannot grow it without bound.
func load(ctx context.Context, url string, rate int) *sync.WaitGroup {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	slots := make(chan struct{}, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case slots <- struct{}{}:
			default:
				continue // all slots busy: the generator stays bounded rather than queueing
			}
			wg.Add(1)
			go func() {
				defer func() { <-slots; wg.Done() }()
				if resp, err := client.Get(url); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
	}()
	return &wg
}

// Real HAProxy, read through both the exporter and the stats socket while a load
// generator sends 200 sessions/s: the frontend's session rate in the records tracks the
// generated rate, and its utilisation is that rate over the POP's capacity (1000/s).
// Tolerance: the median of the steady-load records within 10% of 200/s (the generator's
// ticker drops ticks under CPU contention; each rate is over one ~1 s interval).
func TestRealHAProxyTracksGeneratedLoad(t *testing.T) {
	const rate, capacity = 200, 1000.0
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer backend.Close()
	front, metricsURL, socket := startHAProxy(t, backend.Listener.Addr().String())

	inv := &inventory.Inventory{POPs: []inventory.POP{{Name: "lon", Site: "london", Capacity: inventory.Capacity{SessionsPerSecond: capacity}}}}
	var mu sync.Mutex
	got := map[string][]*pipeline.HAProxyStat{} // frontend api records by source
	app := pipeline.AppenderFunc(func(_ context.Context, recs ...pipeline.Record) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			if s := r.(*pipeline.HAProxyStat); s.Type == "frontend" && s.Proxy == "api" {
				got[s.M.Collector] = append(got[s.M.Collector], s)
			}
		}
		return nil
	})
	reg := prometheus.NewRegistry()
	c, err := New(Config{Interval: time.Second, Timeout: 900 * time.Millisecond, Targets: []Target{
		{POP: "lon", Node: "via-exporter", URL: metricsURL, Frontends: []string{"api"}},
		{POP: "lon", Node: "via-socket", Socket: socket, Frontends: []string{"api"}},
	}}, Deps{Inventory: inventory.Static(inv), Appender: app, Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := load(ctx, "http://"+front+"/", rate)
	if err := c.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.StopAsync()
	steady := func(src string) []*pipeline.HAProxyStat {
		mu.Lock()
		defer mu.Unlock()
		rs := got[src]
		if len(rs) < 3 {
			return nil
		}
		return slices.Clone(rs[2:]) // the first has no rate; the second may straddle the load's start
	}
	wait.Until(t, 30*time.Second, "8 steady readings from each source", func() bool {
		return len(steady("haproxy/via-exporter")) >= 8 && len(steady("haproxy/via-socket")) >= 8
	})
	cancel()
	wg.Wait()
	for _, src := range []string{"haproxy/via-exporter", "haproxy/via-socket"} {
		rs := steady(src)
		rates := make([]float64, len(rs))
		for i, r := range rs {
			rates[i] = r.SessionRate
			if r.M.Site != "london" || r.POP != "lon" || r.Status == "" {
				t.Errorf("%s: record %+v not mapped to lon/london or without status", src, r)
			}
			if want := r.SessionRate / capacity; r.Utilisation != want {
				t.Errorf("%s: utilisation %v, want %v", src, r.Utilisation, want)
			}
		}
		slices.Sort(rates)
		med := rates[len(rates)/2]
		t.Logf("%s: generated %d sessions/s; recorded median %.1f (min %.1f, max %.1f) over %d readings; utilisation %.3f", src, rate, med, rates[0], rates[len(rates)-1], len(rates), med/capacity)
		if med < 0.9*rate || med > 1.1*rate {
			t.Errorf("%s: median session rate %.1f/s, want %d/s ±10%%", src, med, rate)
		}
	}
	if n := testutil.CollectAndCount(reg, "meridian_haproxy_scrape_errors_total"); n != 0 {
		t.Errorf("%d scrape error series, want none", n)
	}
}

// A source that answers garbage is counted under its name and keeps no records; the good
// source next to it goes on.
func TestBadSourceCountedOthersKept(t *testing.T) {
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("haproxy_frontend_sessions_total{proxy=\"api\" 1\nnot a metric line\n"))
	}))
	defer bad.Close()
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("haproxy_frontend_sessions_total{proxy=\"api\"} 1\nhaproxy_frontend_status{proxy=\"api\",state=\"UP\"} 1\n"))
	}))
	defer good.Close()
	var mu sync.Mutex
	var recs []pipeline.Record
	reg := prometheus.NewRegistry()
	c, err := New(Config{Interval: time.Hour, Timeout: time.Second, Targets: []Target{
		{POP: "lon", Node: "bad", URL: bad.URL}, {POP: "lon", Node: "good", URL: good.URL},
	}}, Deps{Appender: pipeline.AppenderFunc(func(_ context.Context, rs ...pipeline.Record) error {
		mu.Lock()
		defer mu.Unlock()
		recs = append(recs, rs...)
		return nil
	}), Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.iteration(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Meta().Node != "good" {
		t.Fatalf("records %v, want the good source's frontend only", recs)
	}
	if v := testutil.ToFloat64(c.metrics.ParseErrors.WithLabelValues(bad.URL)); v != 2 {
		t.Errorf("parse errors of %s = %v, want 2", bad.URL, v)
	}
	if v := testutil.ToFloat64(c.metrics.Errors.WithLabelValues(bad.URL, "error")); v != 1 {
		t.Errorf("scrape errors of %s = %v, want 1 (nothing usable)", bad.URL, v)
	}
}

type ownsOnly string

func (o ownsOnly) Owns(target string) bool { return target == string(o) }

// With the collector ring, a replica reads only the targets it owns.
func TestReadsOnlyOwnedTargets(t *testing.T) {
	var hits [2]atomic.Int32
	var srvs [2]*httptest.Server
	for i := range srvs {
		srvs[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hits[i].Add(1)
			_, _ = w.Write([]byte("haproxy_frontend_sessions_total{proxy=\"api\"} 1\n"))
		}))
		defer srvs[i].Close()
	}
	c, err := New(Config{Interval: time.Hour, Timeout: time.Second, Targets: []Target{{POP: "lon", Node: "a", URL: srvs[0].URL}, {POP: "lon", Node: "b", URL: srvs[1].URL}}},
		Deps{Appender: pipeline.AppenderFunc(func(context.Context, ...pipeline.Record) error { return nil }), Logger: slog.New(slog.DiscardHandler),
			Registerer: prometheus.NewRegistry(), Owner: ownsOnly(srvs[1].URL)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.iteration(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, b := hits[0].Load(), hits[1].Load(); a != 0 || b != 1 {
		t.Errorf("reads per target %d, %d; want only the owned one read", a, b)
	}
}
