package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
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
			args := append([]string{"-config.file", file}, serveArgs(t, "example_"+strings.ReplaceAll(name, "-", "_"))...)
			cfg, err := parseConfig(args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			offline(cfg)
			startApp(t, newApp(cfg, newLogger(cfg, io.Discard, new(slog.LevelVar))))
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
