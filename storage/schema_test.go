package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

func TestTTLsAndViewsExist(t *testing.T) {
	s := storagetest.New(t)
	ctx := context.Background()
	out, err := s.Query(ctx, "SELECT name, engine, engine_full FROM system.tables WHERE database = currentDatabase() ORDER BY name", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, rest, _ := strings.Cut(l, "\t")
		rows[name] = rest
	}
	for table, ttl := range map[string]string{
		"flows": "TTL toDateTime(time) + toIntervalDay(7)", "tunnel_stats": "TTL toDateTime(time) + toIntervalDay(30)",
		"steering_decisions": "TTL toDateTime(time) + toIntervalDay(90)", "flows_1m": "TTL minute + toIntervalDay(90)",
		"probes_1m": "TTL minute + toIntervalDay(90)", "steering_inputs": "TTL toDateTime(time) + toIntervalDay(30)",
		"alert_states": "TTL toDateTime(time) + toIntervalDay(90)",
	} {
		if !strings.Contains(rows[table], ttl) {
			t.Errorf("%s: want %q in %q", table, ttl, rows[table])
		}
	}
	for _, mv := range []string{"flows_1m_mv", "probes_1m_mv"} {
		if !strings.HasPrefix(rows[mv], "MaterializedView") {
			t.Errorf("%s: engine %q, want MaterializedView", mv, rows[mv])
		}
	}
	for _, agg := range []string{"flows_1m", "probes_1m"} {
		if !strings.HasPrefix(rows[agg], "AggregatingMergeTree") {
			t.Errorf("%s: engine %q, want AggregatingMergeTree", agg, rows[agg])
		}
	}
	if !strings.Contains(rows["flows"], fmt.Sprintf("non_replicated_deduplication_window = %d", storage.DedupWindow)) {
		t.Errorf("flows: no deduplication window in %q", rows["flows"])
	}
}

// A TTL changed in the configuration is applied to an existing table on the next Migrate.
func TestMigrateAppliesChangedTTL(t *testing.T) {
	cfg := storagetest.Config(t)
	s, err := storage.New(cfg, storage.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { s.Exec(ctx, "DROP DATABASE IF EXISTS "+cfg.Database) })
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	cfg.TTL["flows"] = model.Duration(36 * time.Hour)
	s2, err := storage.New(cfg, storage.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := s2.Query(ctx, "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'flows'", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "TTL toDateTime(time) + toIntervalHour(36)") {
		t.Fatalf("flows TTL not changed: %s", out)
	}
}

// A table made by an older Meridian remembers 10,000 blocks, some 2 MB of the engine's
// memory each; the next Migrate brings every table to DedupWindow.
func TestMigrateShrinksDedupWindow(t *testing.T) {
	s := storagetest.New(t)
	ctx := context.Background()
	for _, table := range []string{"flows", "flows_1m"} {
		if err := s.Exec(ctx, "ALTER TABLE "+s.Database()+"."+table+" MODIFY SETTING non_replicated_deduplication_window = 10000"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := s.Query(ctx, "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() AND engine_full LIKE '%deduplication_window%' ORDER BY name", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 10 {
		t.Fatalf("%d tables with a deduplication window, want every MergeTree table:\n%s", len(lines), out)
	}
	want := fmt.Sprintf("non_replicated_deduplication_window = %d", storage.DedupWindow)
	for _, l := range lines {
		if !strings.Contains(l, want) || strings.Contains(l, "= 10000") {
			t.Errorf("want %q: %s", want, l)
		}
	}
}
