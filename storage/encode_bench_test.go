package storage_test

import (
	"testing"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
)

func BenchmarkEncodeFlow(b *testing.B) {
	recs := make([]pipeline.Record, benchBlock)
	for i := range recs {
		recs[i] = flow(i)
	}
	enc := storage.NewEncoder()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := enc.Encode(pipeline.KindFlow, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchBlock)/b.Elapsed().Seconds(), "rows/s")
}
