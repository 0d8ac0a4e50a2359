package hubble

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/collectors/hubble/hubbletest"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

// startPipeline runs the real pipeline into a fresh embedded ClickHouse database.
func startPipeline(tb testing.TB, batchAge time.Duration) (*pipeline.Pipeline, *storage.Store) {
	tb.Helper()
	store := storagetest.New(tb)
	var cfg pipeline.Config
	cfg.RegisterFlags(flag.NewFlagSet("p", flag.PanicOnError))
	cfg.Spool.Path = tb.TempDir()
	cfg.Spool.Fsync = false
	if batchAge > 0 { // else the pipeline's default
		cfg.BatchAge = batchAge
	}
	cfg.Instance = "hubble-test"
	p, err := pipeline.New(cfg, pipeline.Deps{Encoder: storage.NewEncoder(), Inserter: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), p); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), p) })
	return p, store
}

func query(tb testing.TB, s *storage.Store, sql string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := s.Query(ctx, strings.ReplaceAll(sql, "{db}", s.Database()), "TabSeparated")
	if err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return strings.TrimSpace(string(out))
}

// TestClickHouse runs relay -> collector -> pipeline -> embedded ClickHouse and reads the
// flows and edges back with SQL.
func TestClickHouse(t *testing.T) {
	p, store := startPipeline(t, 100*time.Millisecond)
	ring := concat(t, "hubble-otel-basic-sample-400-tcp-flows.json", "cilium-docs-export-dropped-policy-denied.json")
	// The captures are years old: bring them inside the tables' TTL, keeping the
	// sub-second offsets so that edges fall into the same seconds.
	hubbletest.Shift(ring, time.Now().Add(-time.Hour).Truncate(time.Second).Sub(ring[0].GetTime().AsTime().Truncate(time.Second)))
	srv := startServer(t, ring)
	startCollector(t, testConfig(RelayConfig{Cluster: "kind", Address: srv.Addr()}), p, nil, nil)

	waitFor(t, "rows in ClickHouse", func() bool {
		return query(t, store, "SELECT count() FROM {db}.flows") == "401" &&
			query(t, store, "SELECT sum(flows) FROM {db}.flow_edges") == "401"
	})
	for sql, want := range map[string]string{
		"SELECT src_workload, dst_workload, dst_workload_kind, verdict, drop_reason, dst_port FROM {db}.flows WHERE verdict = 'DROPPED'":               "xwing\tdeathstar\tDeployment\tDROPPED\tPOLICY_DENIED\t80",
		"SELECT drop_reasons['POLICY_DENIED'], drops FROM {db}.flow_edges WHERE dst_workload = 'deathstar'":                                            "1\t1",
		"SELECT http_method, http_code, http_path, l7_latency FROM {db}.flows WHERE src_workload = 'ratings' AND l7_latency > 0 ORDER BY time LIMIT 1": "GET\t200\t/ratings/0\t1678100",
		"SELECT sum(flows), sum(requests) FROM {db}.flow_edges WHERE src_workload = 'productpage' AND dst_workload = 'reviews' AND port = 9080":        "98\t4",
		"SELECT count(), max(latency_p99) BETWEEN 10172885 AND 11243715 FROM {db}.flow_edges WHERE dst_workload = 'details-v1'":                        "5\t1",
		"SELECT uniqExact(time) FROM {db}.flow_edges WHERE cluster = 'kind' AND dst_workload = 'reviews'":                                              "5",
	} {
		if got := query(t, store, sql); got != want {
			t.Errorf("%s\n got %q\nwant %q", sql, got, want)
		}
	}
}
