package wireguard

import (
	"context"
	"flag"
	"gopkg.in/yaml.v3"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/grafana/dskit/services"

	"github.com/meridianhq/meridian/collectors/scrape"
	"github.com/meridianhq/meridian/collectors/shard/shardtest"
	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// recorder is a pipeline.Appender keeping what it got.
type recorder struct {
	mu   sync.Mutex
	recs []pipeline.Record
}

func (r *recorder) Append(_ context.Context, recs ...pipeline.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, recs...)
	return nil
}

func (r *recorder) take() []*pipeline.TunnelStat {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*pipeline.TunnelStat
	for _, rec := range r.recs {
		out = append(out, rec.(*pipeline.TunnelStat))
	}
	r.recs = nil
	return out
}

func testConfig() Config {
	var c Config
	c.RegisterFlags(flagSet())
	return c
}

func TestCollectorFileSourceMapsInventoryAndSurvivesBadScrapes(t *testing.T) {
	dir := t.TempDir()
	dump := filepath.Join(dir, "dump.txt")
	sample := readTestdata(t, "mindflavor-wg-show-all-dump-issue19.txt")
	if err := os.WriteFile(dump, sample, 0o600); err != nil {
		t.Fatal(err)
	}
	inv := &inventory.Inventory{
		Sites: []inventory.Site{{Name: "nyc"}, {Name: "tokyo"}},
		Nodes: []inventory.Node{
			{Name: "nyc-1", Site: "nyc", Cluster: "destroyer", WireGuardKey: "VfjHGauX8OxotDMm2vi3JdwOUTDsFbxCnyInJ/wAXlk="},
			{Name: "tokyo-1", Site: "tokyo", WireGuardKey: "sUsR6xufQQ8Tf0FuyY9tfEeYdhVMeFelr4ZMUrj+B0E="},
		},
	}
	cfg := testConfig()
	cfg.DumpFiles = []string{dump}
	reg := prometheus.NewRegistry()
	rec := &recorder{}
	c, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg, Appender: rec, Inventory: inventory.Static(inv)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1574770800, 0)
	c.now = func() time.Time { return now }
	ctx := context.Background()
	if err := c.iteration(ctx); err != nil {
		t.Fatal(err)
	}
	got := rec.take()
	if len(got) != 17 {
		t.Fatalf("%d records, want 17", len(got))
	}
	var tokyo, unknown *pipeline.TunnelStat
	for _, r := range got {
		switch r.PublicKey {
		case "sUsR6xufQQ8Tf0FuyY9tfEeYdhVMeFelr4ZMUrj+B0E=":
			tokyo = r
		case "923V/iAdcz8BcqB0Xo6pDJzARGBJCQ6fWe+peixQyB4=":
			unknown = r
		}
	}
	if tokyo.PeerNode != "tokyo-1" || tokyo.PeerSite != "tokyo" || tokyo.M.Node != "nyc-1" || tokyo.M.Site != "nyc" ||
		tokyo.M.Cluster != "destroyer" || tokyo.Status != pipeline.StatusOK || tokyo.M.Collector != "wireguard/file:"+dump {
		t.Fatalf("mapped peer %+v", tokyo)
	}
	if unknown.PeerNode != "" || unknown.Status != pipeline.StatusUnknown {
		t.Fatalf("unknown, never-handshaked peer %+v", unknown)
	}

	// The next dump has one corrupt line and the tokyo peer's counters moved by 1000 B in 10 s.
	now = now.Add(10 * time.Second)
	next := strings.Replace(string(sample), "75066288152\t1624251784", "75066289152\t1624252784", 1)
	next = strings.Replace(next, "gnRKXngxSppcYegsg38kEFn5Lmk4NcnRXLcZTtg2A2E=", "corrupt", 1)
	if err := os.WriteFile(dump, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.iteration(ctx); err != nil {
		t.Fatal(err)
	}
	got = rec.take()
	if len(got) != 16 {
		t.Fatalf("%d records after one corrupt line, want 16", len(got))
	}
	for _, r := range got {
		if r.PeerNode == "tokyo-1" && (r.RxRate != 100 || r.TxRate != 100) {
			t.Fatalf("rates %v/%v, want 100/100", r.RxRate, r.TxRate)
		}
	}
	src := "file:" + dump
	if v := testutil.ToFloat64(c.metrics.ParseErrors.WithLabelValues(src)); v != 1 {
		t.Fatalf("parse errors %v, want 1", v)
	}

	// A missing file fails the source: counted, nothing emitted, state kept.
	if err := os.Remove(dump); err != nil {
		t.Fatal(err)
	}
	if err := c.iteration(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 0 || len(c.state[src]) != 16 {
		t.Fatalf("failed source emitted %d records, state %d", len(got), len(c.state[src]))
	}
	if v := testutil.ToFloat64(c.metrics.Errors.WithLabelValues(src, "error")); v != 1 {
		t.Fatalf("scrape errors %v, want 1", v)
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := testConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	cfg.DownAfter = time.Second
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "wireguard.down-after") {
		t.Fatalf("error %v does not name wireguard.down-after", err)
	}
}

func flagSet() *flag.FlagSet { return flag.NewFlagSet("test", flag.PanicOnError) }

func TestConfigYAML(t *testing.T) {
	cfg := testConfig()
	in := "interval: 5s\ntimeout: 4s\ndevices: true\ndump_files: a.txt,b.txt\nexporter_urls: http://127.0.0.1:9586/metrics\nstale_after: 100s\ndown_after: 200s\n"
	if err := yaml.Unmarshal([]byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Interval != 5*time.Second || !cfg.Devices || len(cfg.DumpFiles) != 2 || len(cfg.ExporterURLs) != 1 ||
		cfg.StaleAfter != 100*time.Second || cfg.DownAfter != 200*time.Second || cfg.SilentDown != DefaultThresholds.SilentDown {
		t.Fatalf("config %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestExporterURLsFollowOwnership shards two exporters as the collector ring would: each
// iteration scrapes only the exporters this replica owns, so a moved one is scraped by
// its new owner from the next iteration on.
func TestExporterURLsFollowOwnership(t *testing.T) {
	var urls []string
	for _, name := range []string{"mdlayher-readme-metrics.prom", "mindflavor-readme-metrics-friendly_name.prom"} {
		body := readTestdata(t, name)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) }))
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL+"/metrics")
	}
	cfg := testConfig()
	cfg.ExporterURLs = urls
	owner := &shardtest.Owner{}
	owner.Set(urls[0])
	reg := prometheus.NewRegistry()
	rec := &recorder{}
	c, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg, Appender: rec, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	scrapes := func() (first, second float64) {
		return promtest.Sum(t, reg, "meridian_wireguard_scrapes_total", "source", urls[0]),
			promtest.Sum(t, reg, "meridian_wireguard_scrapes_total", "source", urls[1])
	}
	if err := c.iteration(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, b := scrapes(); a != 1 || b != 0 || len(rec.take()) == 0 {
		t.Fatalf("owning the first exporter: scrapes %v and %v, want 1 and 0, with records", a, b)
	}
	owner.Set(urls[1])
	if err := c.iteration(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, b := scrapes(); a != 1 || b != 1 || len(rec.take()) == 0 {
		t.Fatalf("after the exporters swapped owners: scrapes %v and %v, want 1 and 1, with records", a, b)
	}
}

// TestCollectorFollowsInventory: a peer whose key no node owns is recorded unmapped; once
// the inventory learns the key, the running collector reads its sources again and maps
// the peer within scrape.RemapGap, long before its next interval.
func TestCollectorFollowsInventory(t *testing.T) {
	dump := filepath.Join(t.TempDir(), "dump.txt")
	if err := os.WriteFile(dump, readTestdata(t, "mindflavor-wg-show-all-dump-issue19.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	const late = "923V/iAdcz8BcqB0Xo6pDJzARGBJCQ6fWe+peixQyB4="
	inv := inventory.Static(&inventory.Inventory{Sites: []inventory.Site{{Name: "nyc"}}})
	cfg := testConfig()
	cfg.DumpFiles = []string{dump}
	cfg.Interval, cfg.Timeout = time.Hour, time.Minute // only an inventory change reads again
	rec := &recorder{}
	c, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(), Appender: rec, Inventory: inv})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.iteration(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range rec.take() {
		if r.PeerNode != "" {
			t.Fatalf("mapped before the inventory knew any node: %+v", r)
		}
	}
	ctx := context.Background()
	if err := services.StartAndAwaitRunning(ctx, c); err != nil {
		t.Fatal(err)
	}
	defer services.StopAndAwaitTerminated(ctx, c)
	start := time.Now()
	if err := inv.Set(inventory.SourceYAML, inventory.Inventory{Sites: []inventory.Site{{Name: "nyc"}},
		Nodes: []inventory.Node{{Name: "late-1", Site: "nyc", WireGuardKey: late}}}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 3*scrape.RemapGap, "the new peer mapped after the inventory change", func() bool {
		mapped := false
		for _, r := range rec.take() {
			mapped = mapped || (r.PublicKey == late && r.PeerNode == "late-1" && r.PeerSite == "nyc")
		}
		return mapped
	})
	t.Logf("peer mapped %v after the inventory change", time.Since(start).Round(time.Millisecond))
}
