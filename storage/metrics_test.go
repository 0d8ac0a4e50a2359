package storage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

func TestMetrics(t *testing.T) {
	cfg := storagetest.Config(t)
	reg := prometheus.NewRegistry()
	s, err := storage.New(cfg, storage.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { s.Exec(ctx, "DROP DATABASE IF EXISTS "+cfg.Database) })
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b := encode(t, pipeline.KindProbe, []pipeline.Record{&pipeline.Probe{POP: "lon"}, &pipeline.Probe{POP: "par"}}, "m1")
	if err := s.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Native = b.Native[:10]
	s.Insert(ctx, b)
	s.Query(ctx, "SELEC 1", "")
	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP meridian_storage_inserted_rows_total Rows in successfully inserted blocks, by table.
# TYPE meridian_storage_inserted_rows_total counter
meridian_storage_inserted_rows_total{table="probes"} 2
# HELP meridian_storage_inserts_total Native block inserts, by table and result (ok, error).
# TYPE meridian_storage_inserts_total counter
meridian_storage_inserts_total{result="error",table="probes"} 1
meridian_storage_inserts_total{result="ok",table="probes"} 1
`), "meridian_storage_inserted_rows_total", "meridian_storage_inserts_total")
	if err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, reg, "meridian_storage_queries_total", "error"); n < 1 {
		t.Fatalf("query errors counted: %v", n)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if mf.GetName() == name && l.GetName() == "result" && l.GetValue() == result {
					return m.Counter.GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{result=%q}", name, result)
	return 0
}
