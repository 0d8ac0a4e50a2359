package hubble

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

// BenchmarkHubbleStore is the embedded engine's whole cost of storing flows: 1.6 million
// real flows (re-timed 10 µs apart), pre-encoded, inserted into a fresh `flows` table and
// then merged until the engine schedules no more merges. CPU per row is the process's
// (the insert's synchronous part, the engine's insert pipelines and merges), in three
// phases: 50,000-row blocks (batch_rows before #24) with merges stopped, the same with
// merges, and 200,000-row blocks (the pipeline's default batch_rows) with merges.
func BenchmarkHubbleStore(b *testing.B) {
	const rows = 1_600_000
	recs, _ := decodedSamples(b)
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	flows := make([]pipeline.Flow, rows)
	for i := range flows {
		flows[i] = recs[i%len(recs)]
		flows[i].M.Time = base.Add(time.Duration(int64(i) * replayStepNano))
	}
	enc := storage.NewEncoder()
	phase := func(name string, size int, merges bool) time.Duration {
		var blocks [][]byte
		for s := 0; s < rows; s += size {
			blk := enc.Open(pipeline.KindFlow)
			for i := s; i < s+size; i++ {
				if _, err := blk.Add([]pipeline.Record{&flows[i]}); err != nil {
					b.Fatal(err)
				}
			}
			native, err := blk.Seal()
			if err != nil {
				b.Fatal(err)
			}
			blocks = append(blocks, native)
		}
		store := storagetest.New(b)
		table := store.Table(pipeline.KindFlow)
		if !merges {
			if err := store.Exec(context.Background(), "SYSTEM STOP MERGES "+table); err != nil {
				b.Fatal(err)
			}
		}
		start, cpu0, eng0 := time.Now(), cpuTime(), total(engineCPU())
		for i, native := range blocks {
			if err := store.Insert(context.Background(), pipeline.Block{Kind: pipeline.KindFlow, Rows: size, Token: fmt.Sprint(name, i), Native: native}); err != nil {
				b.Fatal(err)
			}
		}
		settle(b, store)
		cpu, eng := cpuTime()-cpu0, total(engineCPU())-eng0
		if got := query(b, store, "SELECT count() FROM "+table); got != fmt.Sprint(rows) {
			b.Fatalf("%s: %s rows stored, want %d", name, got, rows)
		}
		parts := query(b, store, "SELECT count() FROM system.parts WHERE active AND database = '"+store.Database()+"' AND table = 'flows'")
		fmt.Printf("%s: %.0f ns CPU per row (engine threads %.0f), %v wall, %s parts at the end\n", name,
			float64(cpu.Nanoseconds())/rows, float64(eng.Nanoseconds())/rows, time.Since(start).Round(time.Millisecond), parts)
		return cpu
	}
	insert := phase("50,000-row blocks, merges stopped", 50_000, false)
	merged := phase("50,000-row blocks, merged", 50_000, true)
	large := phase("200,000-row blocks, merged", 200_000, true)
	perRow := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / rows }
	fmt.Printf("BENCH hubble_store_cpu %.0f ns/row ratio=%.2f\n", perRow(merged), perRow(merged)/perRow(insert)) // against the insert alone
	fmt.Printf("BENCH hubble_store_cpu_200k %.0f ns/row ratio=%.2f\n", perRow(large), perRow(large)/perRow(merged))
}

// settle waits until the engine runs no merge in the store's database and the flows
// table's part count has held for a second.
func settle(b *testing.B, store *storage.Store) {
	b.Helper()
	q := fmt.Sprintf("SELECT (SELECT count() FROM system.merges WHERE database = '%[1]s'), "+
		"(SELECT count() FROM system.parts WHERE active AND database = '%[1]s' AND table = 'flows')", store.Database())
	deadline := time.Now().Add(5 * time.Minute)
	for last, same := "", 0; same < 5; {
		if time.Now().After(deadline) {
			b.Fatal("merges did not settle in 5 minutes")
		}
		time.Sleep(200 * time.Millisecond)
		s := query(b, store, q)
		if s == last && strings.HasPrefix(s, "0\t") {
			same++
		} else {
			same = 0
		}
		last = s
	}
}
