package storage_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

// Writers of every kind and dashboard readers share the store at once; every block lands
// exactly once and reads never fail.
func TestConcurrentInsertsAndQueries(t *testing.T) {
	s := storagetest.New(t)
	other := storagetest.New(t) // a second database on the same engine stays untouched
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	enc := storage.NewEncoder()
	const blocks, rows = 6, 500
	var wg sync.WaitGroup
	for _, kind := range []pipeline.Kind{pipeline.KindTunnelStat, pipeline.KindFlow, pipeline.KindProbe, pipeline.KindOSDStat} {
		wg.Go(func() {
			for b := range blocks {
				recs := make([]pipeline.Record, rows)
				for i := range recs {
					m := pipeline.Meta{Time: t0.Add(time.Duration(b*rows+i) * time.Millisecond), Node: "n" + strconv.Itoa(i%7)}
					switch kind {
					case pipeline.KindTunnelStat:
						recs[i] = &pipeline.TunnelStat{M: m, Interface: "wg0", RxBytes: uint64(i)}
					case pipeline.KindFlow:
						recs[i] = &pipeline.Flow{M: m, Verdict: "FORWARDED", SourcePort: uint16(i)}
					case pipeline.KindProbe:
						recs[i] = &pipeline.Probe{M: m, POP: "lon", Success: true, RTT: time.Duration(i) * time.Microsecond}
					case pipeline.KindOSDStat:
						recs[i] = &pipeline.OSDStat{M: m, OSD: uint32(i)}
					}
				}
				native, err := enc.Encode(kind, recs)
				if err != nil {
					t.Error(err)
					return
				}
				blk := pipeline.Block{Kind: kind, Rows: rows, Token: fmt.Sprintf("%s-%d", kind, b), Native: native}
				for range 2 { // each block retried once
					if err := s.Insert(ctx, blk); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	for range 3 {
		wg.Go(func() {
			for range 20 {
				if _, err := s.Query(ctx, "SELECT node, count(), max(time) FROM tunnel_stats GROUP BY node", "JSONEachRow"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, table := range []string{"tunnel_stats", "flows", "probes", "osd_stats"} {
		if got := queryString(t, s, "SELECT count() FROM "+table); got != strconv.Itoa(blocks*rows) {
			t.Errorf("%s: %s rows, want %d", table, got, blocks*rows)
		}
		if got := queryString(t, other, "SELECT count() FROM "+table); got != "0" {
			t.Errorf("other database %s: %s rows", table, got)
		}
	}
}
