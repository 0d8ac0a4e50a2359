package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExamples is a new user's path through the docs: each configuration in examples/
// passes `meridian config check`, then starts and answers /readyz. Before starting, the
// test gives it its own paths, ports and token, and removes the peers that live off this
// machine (relays, exporters, mgrs, Alertmanager, probe targets, memberlist seeds), since
// tests never send traffic elsewhere. The ClickHouse-server examples run on the embedded
// engine here: no ClickHouse server that clickhouse-go can talk to runs on this machine.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	if err != nil || len(files) < 4 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			if code := run([]string{"config", "check", file}, &stdout, &stderr); code != 0 {
				t.Fatalf("config check: exit %d\n%s", code, stderr.String())
			}
			dir := t.TempDir()
			token := filepath.Join(dir, "token")
			if err := os.WriteFile(token, []byte("example-token\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := parseConfig([]string{"-config.file", file, "-server.listen-address=127.0.0.1:0", "-server.token-file=" + token,
				"-storage.path=" + enginePath, "-storage.database=example_" + strings.ReplaceAll(name, "-", "_"),
				"-pipeline.spool.path=" + filepath.Join(dir, "spool"), "-ruler.data-dir=" + filepath.Join(dir, "ruler"),
				"-hubble.state-dir=" + filepath.Join(dir, "hubble")}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			offline(cfg)
			a := newApp(cfg, newLogger(cfg, io.Discard, new(slog.LevelVar)))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- serveApp(ctx, a) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()
			deadline := time.Now().Add(90 * time.Second)
			for {
				if a.server != nil && a.server.Addr() != "" {
					if body, code := get(t, "http://"+a.server.Addr()+"/readyz", ""); code == http.StatusOK {
						break
					} else if time.Now().After(deadline) {
						t.Fatalf("/readyz: %d %s", code, body)
					}
				}
				select {
				case err := <-done:
					t.Fatalf("stopped before ready: %v", err)
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}
}

// offline removes what an example reaches off this machine and binds its listeners to
// loopback ports of the system's choosing.
func offline(cfg *Config) {
	cfg.Storage.ClickHouse.DSN, cfg.Storage.ClickHouse.Cluster, cfg.Storage.ClickHouse.PasswordFile = "", "", ""
	cfg.Hubble.Relays = nil
	cfg.WireGuard.ExporterURLs, cfg.WireGuard.Devices = nil, false
	cfg.Ceph.MgrURLs = nil
	cfg.Probes.Vantages = nil
	cfg.Ruler.AlertmanagerURLs = nil
	cfg.Steering.RFC2136.Server = ""
	cfg.Steering.DNS.GeoIPDB = ""
	if cfg.Steering.DNS.Listen != "" {
		cfg.Steering.DNS.Listen = "127.0.0.1:0"
	}
	cfg.CollectorRing.Memberlist.JoinMembers = nil
	cfg.CollectorRing.Memberlist.TCPTransport.BindAddrs = []string{"127.0.0.1"}
	cfg.CollectorRing.Memberlist.TCPTransport.BindPort = 0
}
