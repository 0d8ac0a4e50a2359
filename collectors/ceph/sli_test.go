package ceph

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/alerts/sli"
)

// An OSD whose write latency is unknown (the CLI source, the first scrape, an interval
// with no write) is excluded from the write-latency SLI and counted, never observed as
// a good 0 s event. Real Pacific capture, fed through the collector's own records.
func TestWriteLatencySLIExcludesUnknown(t *testing.T) {
	t0 := time.Now()
	s := sli.New(sli.Deps{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	count := func() (observed, unknown float64) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch {
				case mf.GetName() == "meridian_sli_ceph_write_latency_seconds":
					observed += float64(m.GetHistogram().GetSampleCount())
				case mf.GetName() == "meridian_sli_records_skipped_total" && strings.Contains(m.String(), `value:"latency_unknown"`):
					unknown += m.GetCounter().GetValue()
				}
			}
		}
		return
	}

	metrics := readTestdata(t, "metrics.txt")
	snap, errs := ParseMetrics("mgr", metrics)
	if len(errs) != 0 || len(snap.OSDs) != 3 {
		t.Fatalf("capture: %d OSDs, %v", len(snap.OSDs), errs)
	}
	recs, st := records(snap, nil, t0, "ceph/vault/mgr", "", noHosts)
	s.Consume(recs)
	if o, u := count(); o != 0 || u != 3 {
		t.Fatalf("first scrape: %v observed, %v unknown; want 0 and 3", o, u)
	}
	// The same counters again: no write completed in the interval.
	snap, _ = ParseMetrics("mgr", metrics)
	recs, st = records(snap, st, t0.Add(15*time.Second), "ceph/vault/mgr", "", noHosts)
	s.Consume(recs)
	if o, u := count(); o != 0 || u != 6 {
		t.Fatalf("idle interval: %v observed, %v unknown; want 0 and 6", o, u)
	}
	// Writes completed on every OSD: known, observed.
	snap, _ = ParseMetrics("mgr", metrics)
	for _, o := range snap.OSDs {
		o.WriteLatCount += 100
		o.WriteLatSum += 0.2
	}
	recs, _ = records(snap, st, t0.Add(30*time.Second), "ceph/vault/mgr", "", noHosts)
	s.Consume(recs)
	if o, u := count(); o != 3 || u != 6 {
		t.Fatalf("busy interval: %v observed, %v unknown; want 3 and 6", o, u)
	}

	// The CLI source has no op counters: its OSDs are always unknown.
	cli := newSnapshot()
	tree, _ := ParseOSDTree("tree", readTestdata(t, "osd-tree.json"))
	perf, _ := ParseOSDPerf("perf", readTestdata(t, "osd-perf.json"))
	for id, o := range tree {
		o.CommitLatencyMs, o.ApplyLatencyMs = perf[id].CommitLatencyMs, perf[id].ApplyLatencyMs
	}
	cli.OSDs = tree
	recs, _ = records(cli, nil, t0, "ceph/vault/cli", "", noHosts)
	s.Consume(recs)
	if o, u := count(); o != 3 || u != 9 {
		t.Fatalf("CLI: %v observed, %v unknown; want 3 and 9", o, u)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP meridian_sli_records_skipped_total Records that could not be turned into SLI events, by kind and reason.
# TYPE meridian_sli_records_skipped_total counter
meridian_sli_records_skipped_total{kind="osd_stat",reason="latency_unknown"} 9
`), "meridian_sli_records_skipped_total"); err != nil {
		t.Error(err)
	}
}
