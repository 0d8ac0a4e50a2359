package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/testlog"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

// TestFaultPoisonBlock: the real engine refuses a block for good (a row violates the
// table's constraint). After retry.reject_after attempts the block moves to rejected/,
// with a log line naming the engine's error and a metric, and the probes behind it are
// stored; the other kinds never wait.
func TestFaultPoisonBlock(t *testing.T) {
	store := storagetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := store.Exec(ctx, "ALTER TABLE probes ADD CONSTRAINT no_poison CHECK vantage != 'poison'"); err != nil {
		t.Fatal(err)
	}
	cfg := faultConfig(t.TempDir())
	cfg.Retry.RejectAfter = 3
	reg := prometheus.NewRegistry()
	var logs testlog.Buffer
	p, err := pipeline.New(cfg, pipeline.Deps{Encoder: storage.NewEncoder(), Inserter: store, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), p) })

	probe := func(vantage string) pipeline.Record {
		return &pipeline.Probe{M: pipeline.Meta{Time: time.Now()}, Vantage: vantage, Method: "dns", POP: "lon", Success: true}
	}
	// The poison block first, then 5 good blocks of 10 probes behind it, each sealed alone.
	if err := p.Append(ctx, probe("tyo"), probe("poison")); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	const good = 50
	for i := range good {
		if err := p.Append(ctx, probe(fmt.Sprintf("v%d", i))); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendRange(t, p, 0, 2000, "tunnel_stat")
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	wait.Until(t, time.Minute, "the probes behind the poison block to be stored", func() bool {
		return query(t, store, "SELECT count() FROM probes") == fmt.Sprint(good)
	})
	if got := query(t, store, "SELECT countIf(vantage IN ('poison', 'tyo')) FROM probes"); got != "0" {
		t.Errorf("%s rows of the refused block were stored", got)
	}
	checkExactlyOnce(t, store, "tunnel_stat", 2000)
	if got := promtest.Sum(t, reg, "meridian_pipeline_blocks_rejected_total", "kind", "probe"); got != 1 {
		t.Errorf("meridian_pipeline_blocks_rejected_total{kind=probe} = %v, want 1", got)
	}
	if got := promtest.Sum(t, reg, "meridian_pipeline_blocks_failed_total", "kind", "probe"); got != float64(cfg.Retry.RejectAfter) {
		t.Errorf("meridian_pipeline_blocks_failed_total{kind=probe} = %v, want %d attempts", got, cfg.Retry.RejectAfter)
	}
	if got := promtest.Sum(t, reg, "meridian_pipeline_records_dropped_total", "kind", "probe", "reason", "rejected"); got != 2 {
		t.Errorf("records_dropped_total{reason=rejected} = %v, want the poison block's 2 rows", got)
	}
	wait.Until(t, 10*time.Second, "the spool to drain", func() bool { return promtest.Sum(t, reg, "meridian_pipeline_spool_blocks") == 0 })
	rejected, err := os.ReadDir(filepath.Join(cfg.Spool.Path, "rejected"))
	if err != nil || len(rejected) != 1 {
		t.Errorf("rejected/ holds %v (%v), want the one refused block", rejected, err)
	}
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "rejected/") {
			line = l
		}
	}
	if !strings.Contains(line, "kind=probe") || !strings.Contains(line, "VIOLATED_CONSTRAINT") {
		t.Errorf("log line %q: want one naming the kind and the engine's error", line)
	}
}
