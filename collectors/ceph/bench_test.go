package ceph

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/inventory"
)

// genExposition grows the real Pacific capture to n OSDs: every osd.0 series is repeated
// for osd.0..osd.n-1 in place (the other OSDs' lines are dropped), with values raised by
// step×(id+1) so that a second exposition has moving counters.
func genExposition(b *testing.B, n int, step float64) []byte {
	var out bytes.Buffer
	for line := range strings.SplitSeq(string(readTestdata(b, "metrics.txt")), "\n") {
		if strings.Contains(line, `ceph_daemon="osd.1"`) || strings.Contains(line, `ceph_daemon="osd.2"`) {
			continue
		}
		if !strings.Contains(line, `ceph_daemon="osd.0"`) {
			out.WriteString(line + "\n")
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			b.Fatal(err)
		}
		head := line[:sp]
		for id := range n {
			fmt.Fprintf(&out, "%s %g\n", strings.Replace(head, `"osd.0"`, `"osd.`+strconv.Itoa(id)+`"`, 1), v+step*float64(id+1))
		}
	}
	return out.Bytes()
}

// BenchmarkExposition1kOSDs parses a 1,000-OSD ceph-mgr exposition (~160k series, of
// which ~15 per OSD are read) and computes the records with deltas against a previous
// scrape: the work of one scrape. ratio = time for the whole exposition / the default
// 15 s scrape interval: how much of one interval the work takes.
func BenchmarkExposition1kOSDs(b *testing.B) {
	const n = 1000
	first, second := genExposition(b, n, 0), genExposition(b, n, 10)
	hosts := inventory.NewSnapshot(1, inventory.Inventory{Nodes: []inventory.Node{{Name: "vault-1", Site: "nyc", CephHost: "vm"}}})
	t0 := time.Unix(1700000000, 0)
	s, errs := ParseMetrics("bench", first)
	if len(errs) != 0 || len(s.OSDs) != n {
		b.Fatalf("%d OSDs, errors %v", len(s.OSDs), errs)
	}
	_, prev := records(s, nil, t0, "bench", "", hosts)

	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		s, _ := ParseMetrics("bench", second)
		recs, _ := records(s, prev, t0.Add(15*time.Second), "bench", "", hosts)
		if len(recs) != n+1+2 {
			b.Fatalf("%d records", len(recs))
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	var cfg Config
	cfg.RegisterFlags(flagSet())
	fmt.Printf("ceph: %d OSDs (%d MiB exposition) in %v; %.0f allocs and %.0f KiB allocated per OSD\n", n, len(second)>>20, per,
		float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N)/n, float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(b.N)/n/1024)
	fmt.Printf("BENCH ceph_exposition_1k_osds %.2f us/osd ratio=%.5f\n", per.Seconds()*1e6/n, per.Seconds()/cfg.Interval.Seconds())
}
