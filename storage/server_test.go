package storage_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
)

func serverConfig(t *testing.T, dsn, cluster string) storage.Config {
	t.Helper()
	var cfg storage.Config
	cfg.TTL = storage.DefaultTTLs()
	cfg.Database = "meridian"
	cfg.ClickHouse.DSN = dsn
	cfg.ClickHouse.Cluster = cluster
	cfg.ClickHouse.DialTimeout = 2 * time.Second
	return cfg
}

// closedPort is a loopback port that nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestServerDownFailsFastAndClearly(t *testing.T) {
	addr := closedPort(t)
	s, err := storage.New(serverConfig(t, "clickhouse://meridian@"+addr+"/", ""), storage.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("New must not need the server up: %v", err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = s.Migrate(ctx)
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("migrate against a closed port: want an error naming %s and the refusal, got %v", addr, err)
	}
	native, _ := storage.NewEncoder().Encode(pipeline.KindProbe, []pipeline.Record{&pipeline.Probe{Vantage: "x"}})
	err = s.Insert(ctx, pipeline.Block{Kind: pipeline.KindProbe, Rows: 1, Token: "t", Native: native})
	if err == nil || !strings.Contains(err.Error(), "probes") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("insert against a closed port: %v", err)
	}
	if _, err := s.Query(ctx, "SELECT 1", "JSONEachRow"); err == nil {
		t.Fatal("query against a closed port: no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failing took %s", d)
	}
}

func TestClusterDDL(t *testing.T) {
	s, err := storage.New(serverConfig(t, "clickhouse://127.0.0.1:1/", "prod"), storage.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ddl, err := s.DDL()
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(ddl, ";\n")
	for _, want := range []string{
		"CREATE DATABASE IF NOT EXISTS meridian ON CLUSTER prod",
		"CREATE TABLE IF NOT EXISTS meridian.flows_local ON CLUSTER prod",
		"ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')",
		"ENGINE = ReplicatedAggregatingMergeTree(",
		"CREATE TABLE IF NOT EXISTS meridian.flows ON CLUSTER prod AS meridian.flows_local ENGINE = Distributed(prod, meridian, flows_local, rand())",
		"CREATE MATERIALIZED VIEW IF NOT EXISTS meridian.flows_1m_mv_local ON CLUSTER prod\nTO meridian.flows_1m_local",
		"FROM meridian.flow_edges_local",
		"ENGINE = Distributed(prod, meridian, probes_1m_local, rand())",
		"DROP VIEW IF EXISTS meridian.flows_1m_mv_local ON CLUSTER prod",
		"ALTER TABLE meridian.flows_1m ON CLUSTER prod ADD COLUMN IF NOT EXISTS dst_cluster",
		"ALTER TABLE meridian.flows_1m ON CLUSTER prod ADD COLUMN IF NOT EXISTS src_cluster",
		"MODIFY ORDER BY (cluster, src_namespace, src_workload, dst_namespace, dst_workload, protocol, port, minute, dst_cluster, src_cluster)",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("cluster DDL lacks %q", want)
		}
	}
	for _, stmt := range ddl {
		if (strings.HasPrefix(stmt, "CREATE") || strings.HasPrefix(stmt, "ALTER") || strings.HasPrefix(stmt, "DROP")) && !strings.Contains(stmt, "ON CLUSTER prod") {
			t.Errorf("statement without ON CLUSTER: %s", stmt)
		}
	}
	if strings.Contains(all, "non_replicated_deduplication_window") {
		t.Error("replicated tables need no non-replicated deduplication window")
	}
	// Every record kind's table has a Distributed table under its plain name.
	for _, table := range storage.Tables {
		if !strings.Contains(all, "ENGINE = Distributed(prod, meridian, "+table+"_local, rand())") {
			t.Errorf("no Distributed table for %s", table)
		}
	}
}

func TestSingleNodeDDLHasNoCluster(t *testing.T) {
	s, err := storage.New(serverConfig(t, "clickhouse://127.0.0.1:1/", ""), storage.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ddl, _ := s.DDL()
	all := strings.Join(ddl, "\n")
	if strings.Contains(all, "ON CLUSTER") || strings.Contains(all, "Replicated") || strings.Contains(all, "Distributed") {
		t.Fatal("single-node DDL mentions cluster engines")
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := serverConfig(t, "", "prod")
	cfg.Path = "x"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "clickhouse.cluster") {
		t.Errorf("cluster without DSN: %v", err)
	}
	cfg = serverConfig(t, "clickhouse://h:9000", "")
	cfg.Database = "bad-name"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "storage.database") {
		t.Errorf("bad database: %v", err)
	}
	cfg = serverConfig(t, "clickhouse://h:9000", "")
	if err := cfg.TTL.Set("nope=1d"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `unknown table "nope"`) {
		t.Errorf("unknown TTL table: %v", err)
	}
	cfg = serverConfig(t, "clickhouse://h:9000", "")
	if err := cfg.TTL.Set("flows=14d,probes=60d"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.TTL.String(); !strings.Contains(got, "flows=2w") || !strings.Contains(got, "probes=60d") || !strings.Contains(got, "tunnel_stats=30d") {
		t.Errorf("TTLs: %s", got)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	cfg.ClickHouse.PasswordFile = pw + ".missing"
	if _, err := storage.New(cfg, storage.Deps{Registerer: prometheus.NewRegistry()}); err == nil || !strings.Contains(err.Error(), "storage.clickhouse.password_file") {
		t.Errorf("missing password file: %v", err)
	}
}

func TestBadDSNDoesNotLeakPassword(t *testing.T) {
	_, err := storage.New(serverConfig(t, "clickhouse://meridian:hunter2@127.0.0.1:notaport/", ""), storage.Deps{Registerer: prometheus.NewRegistry()})
	if err == nil || !strings.Contains(err.Error(), "clickhouse.dsn") {
		t.Fatalf("want a clickhouse.dsn error, got %v", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the password: %v", err)
	}
}
