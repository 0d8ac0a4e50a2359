package ruler

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// BenchmarkAppendSLI measures one evaluation tick's feed of the TSDB at fleet scale:
// 2,000 POPs probed from 5 vantages (10,000 probe series, each with its 13-series
// histogram and two counters: 150,000 samples). Baseline: gathering the same registry
// for /metrics, which every tick must do anyway.
func BenchmarkAppendSLI(b *testing.B) {
	inv := &inventory.Inventory{}
	s := sli.New(sli.Deps{Inventory: inventory.Static(inv)})
	var recs []pipeline.Record
	for p := range 2000 {
		for v := range 5 {
			recs = append(recs, &pipeline.Probe{POP: fmt.Sprintf("pop-%d", p), Vantage: fmt.Sprintf("v%d", v), Service: "api",
				Success: true, RTT: time.Duration(p%300) * time.Millisecond})
		}
	}
	s.Consume(recs)
	var cfg Config
	cfg.RegisterFlags(flagSet())
	cfg.DataDir = b.TempDir()
	r, err := New(cfg, Deps{SLI: s, Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.starting(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer r.stopping(nil)

	const ticks = 5
	start := time.Now()
	for range ticks {
		if _, err := r.sli.Gather(); err != nil {
			b.Fatal(err)
		}
	}
	gather := time.Since(start) / ticks
	base := time.Now()
	b.ResetTimer()
	for i := range ticks {
		r.appendSLI(base.Add(time.Duration(i) * 10 * time.Second))
	}
	b.StopTimer()
	perTick := b.Elapsed() / ticks
	fmt.Printf("BENCH ruler_append_sli_tick %.1f ms ratio=%.2f\n", float64(perTick.Microseconds())/1000, float64(perTick)/float64(gather))
}
