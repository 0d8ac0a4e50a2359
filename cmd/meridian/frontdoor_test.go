package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/wait"
)

// The haproxy and keepalived modules run from the configuration file: HAProxy's exporter
// (a real capture served over HTTP) and keepalived's notify FIFO reach ClickHouse as
// haproxy_stats, vrrp_transitions and vrrp_states rows mapped to the POP's site.
func TestFrontDoorModules(t *testing.T) {
	capture, err := os.ReadFile("../../collectors/haproxy/testdata/exporter-2.6.12.txt")
	if err != nil {
		t.Fatal(err)
	}
	exporter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(capture) }))
	defer exporter.Close()
	fifo := filepath.Join(t.TempDir(), "notify.fifo")
	cfgFile := filepath.Join(t.TempDir(), "meridian.yaml")
	cfg := fmt.Sprintf(`haproxy:
  interval: 200ms
  timeout: 200ms
  targets:
  - {pop: lon, node: lon-fd-1, url: %q, frontends: [api]}
keepalived:
  interval: 200ms
  nodes:
  - {pop: lon, node: lon-fd-1, fifo: %q}
inventory:
  sites:
  - {name: london, region: europe, role: edge, city: London, lat: 51.5, lon: -0.1}
  pops:
  - {name: lon, site: london, vips: [192.0.2.10], capacity: {sessions_per_second: 1000}}
`, exporter.URL+"/metrics", fifo)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a := testApp(t, append(serveArgs(t, "frontdoor"), "-target=haproxy,keepalived", "-config.file="+cfgFile, "-pipeline.batch-age=100ms")...)
	startApp(t, a)
	wait.For(t, 10*time.Second, "the keepalived module's FIFO", func() error { _, err := os.Stat(fifo); return err })
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteString(`INSTANCE "VI_lon" BACKUP 150` + "\n" + `INSTANCE "VI_lon" MASTER 150` + "\n"); err != nil {
		t.Fatal(err)
	}
	query := func(sql string) string {
		out, err := a.store.Query(context.Background(), sql, "TSV")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	wait.For(t, 30*time.Second, "the front door's rows", func() error {
		fe := query("SELECT site, status FROM frontdoor.haproxy_stats WHERE type = 'frontend' AND proxy = 'api' LIMIT 1")
		tr := query("SELECT count() FROM frontdoor.vrrp_transitions WHERE site = 'london' AND to_state = 'MASTER'")
		st := query("SELECT count() FROM frontdoor.vrrp_states WHERE holds_vip AND has(vips, '192.0.2.10')")
		if fe == "london\tUP" && tr == "1" && st != "0" {
			return nil
		}
		return fmt.Errorf("frontend %q, transitions to MASTER %q, states holding the VIP %q", fe, tr, st)
	})
}
