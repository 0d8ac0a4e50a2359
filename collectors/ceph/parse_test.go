package ceph

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/collectors/scrape"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/ceph/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseMetricsRealPacific(t *testing.T) {
	s, errs := ParseMetrics("pacific", readTestdata(t, "metrics.txt"))
	if len(errs) != 0 {
		t.Fatalf("errors on a real capture: %v", errs)
	}
	if s.Health != "HEALTH_OK" || len(s.Checks) != 0 || len(s.OSDs) != 3 || len(s.Pools) != 2 {
		t.Fatalf("snapshot health %q checks %v osds %d pools %d", s.Health, s.Checks, len(s.OSDs), len(s.Pools))
	}
	o := s.OSDs[0]
	if o.Host != "vm" || o.DeviceClass != "hdd" || !o.Up || !o.In || o.CommitLatencyMs != 4 || o.ApplyLatencyMs != 4 ||
		o.ReadLatSum != 17.084133274 || o.ReadLatCount != 28033 || o.WriteLatCount != 32657 || o.WriteBytes != 245923864 {
		t.Fatalf("osd.0 %+v", o)
	}
	if p := s.Pools[2]; p.Name != "bench" || p.WriteOps != 77716 || p.Stored != 500731936 {
		t.Fatalf("pool 2 %+v", p)
	}
}

func TestParseMetricsBadLinesAndChecks(t *testing.T) {
	in := strings.Join([]string{
		`ceph_health_status 1.0`,
		`ceph_health_detail{name="OSD_DOWN",severity="HEALTH_WARN"} 1.0`,
		`ceph_health_detail{name="MON_DISK_LOW",severity="HEALTH_WARN"} 0.0`,
		`ceph_osd_up{ceph_daemon="osd.0"} 1.0`,
		`ceph_osd_up{ceph_daemon="osd.1" 0.0`, // line 5: broken
		`ceph_osd_up{ceph_daemon="mds.a"} 1.0`,
		`ceph_osd_up{ceph_daemon="osd.2"} 0.0`,
		`ceph_osd_perf_commit_latency_seconds{osd="osd.2"} 0.0125`,
	}, "\n")
	s, errs := ParseMetrics("mgr", []byte(in))
	if s.Health != "HEALTH_WARN" || len(s.Checks) != 1 || s.Checks[0] != "OSD_DOWN" {
		t.Fatalf("health %q checks %v", s.Health, s.Checks)
	}
	if len(s.OSDs) != 2 || !s.OSDs[0].Up || s.OSDs[2].Up || s.OSDs[2].CommitLatencyMs != 12.5 {
		t.Fatalf("osds %+v %+v", s.OSDs[0], s.OSDs[2])
	}
	var le *scrape.LineError
	if len(errs) != 2 || !errors.As(errs[1], &le) || le.Line != 5 || le.Source != "mgr" || !strings.Contains(errs[0].Error(), "mds.a") {
		t.Fatalf("errors %v, want line 5 and the mds series", errs)
	}
}

func TestParseOSDPerfAllLayouts(t *testing.T) {
	real, errs := ParseOSDPerf("pacific", readTestdata(t, "osd-perf.json"))
	if len(errs) != 0 || len(real) != 3 || real[2].CommitLatencyMs != 4 || real[0].ApplyLatencyMs != 3 {
		t.Fatalf("pacific: %v %v", real, errs)
	}
	do, errs := ParseOSDPerf("nautilus", readTestdata(t, "digitalocean-ceph_exporter-osd-perf.json"))
	if len(errs) != 0 || len(do) != 5 || do[3].ApplyLatencyMs != 64 || do[3].CommitLatencyMs != 1 {
		t.Fatalf("digitalocean: %v %v", do, errs)
	}
	var dd struct {
		OSDPerf json.RawMessage `json:"osd_perf"`
	}
	if err := json.Unmarshal(readTestdata(t, "datadog-integrations-core-ceph-raw.json"), &dd); err != nil {
		t.Fatal(err)
	}
	lum, errs := ParseOSDPerf("luminous", dd.OSDPerf)
	if len(errs) != 0 || len(lum) != 3 || lum[0].ApplyLatencyMs != 195 || lum[0].CommitLatencyMs != 137 {
		t.Fatalf("luminous layout: %v %v", lum, errs)
	}
	var beats struct {
		Finished []struct{ Outb string } `json:"finished"`
	}
	if err := json.Unmarshal(readTestdata(t, "elastic-beats-mgr_osd_perf-sample.json"), &beats); err != nil {
		t.Fatal(err)
	}
	ns, errs := ParseOSDPerf("restful", []byte(beats.Finished[0].Outb))
	// The *_ns fields win: 3 ns is 0.000003 ms, not the 1 ms of the coarse field.
	if len(errs) != 0 || ns[1].CommitLatencyMs != 3e-6 || ns[1].ApplyLatencyMs != 4e-6 {
		t.Fatalf("ns fields: %+v %v", ns[1], errs)
	}
	bad := []byte("{\"osd_perf_infos\": [\n{\"id\": 1, \"perf_stats\": {\"commit_latency_ms\": 2, \"apply_latency_ms\": 3}},\n{\"id\": \"x\"},\n{\"perf_stats\": {}}]}")
	got, errs := ParseOSDPerf("partial", bad)
	if len(got) != 1 || got[1].ApplyLatencyMs != 3 || len(errs) != 2 {
		t.Fatalf("partial: %v %v", got, errs)
	}
	_, errs = ParseOSDPerf("broken", []byte("{\n\"osdstats\": {\n  \"osd_perf_infos\": [,]}}"))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "broken:3:") {
		t.Fatalf("syntax error %v should name broken:3", errs)
	}
}

func TestParseStatus(t *testing.T) {
	s, err := ParseStatus("pacific", readTestdata(t, "status.json"))
	if err != nil || s.Health != "HEALTH_OK" || s.FSID != "32de5b58-f81c-48a5-b82a-9eba0db897fa" || *s.OSDCounts != [3]uint32{3, 3, 3} {
		t.Fatalf("pacific status %+v %v", s, err)
	}
	var dd struct {
		Status json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal(readTestdata(t, "datadog-integrations-core-ceph-raw.json"), &dd); err != nil {
		t.Fatal(err)
	}
	if s, err := ParseStatus("jewel", dd.Status); err != nil || s.Health != "HEALTH_OK" || *s.OSDCounts != [3]uint32{3, 3, 3} {
		t.Fatalf("old layout %+v %v", s, err)
	}
	// Fragments from digitalocean/ceph_exporter's tests: the ones with a health status,
	// checks or summary of a known severity, or an osdmap parse; the three others
	// (pgmap only, an unknown severity) are reported, not guessed.
	sc := bufio.NewScanner(bytes.NewReader(readTestdata(t, "digitalocean-ceph_exporter-status-fragments.jsonl")))
	var ok, failed int
	for sc.Scan() {
		s, err := ParseStatus("fragment", sc.Bytes())
		switch {
		case err != nil:
			failed++
		case strings.Contains(sc.Text(), `"MON_DOWN"`) && (len(s.Checks) != 1 || s.Checks[0] != "MON_DOWN" || s.Health != "HEALTH_WARN"):
			t.Fatalf("checks %v", s.Checks)
		default:
			ok++
		}
	}
	if ok != 17 || failed != 3 {
		t.Fatalf("fragments: %d parsed, %d rejected", ok, failed)
	}
}

func TestParseOSDTree(t *testing.T) {
	osds, errs := ParseOSDTree("tree", readTestdata(t, "osd-tree.json"))
	if len(errs) != 0 || len(osds) != 3 || osds[1].Host != "vm" || !osds[1].Up || !osds[1].In || osds[1].DeviceClass != "hdd" {
		t.Fatalf("%v %v", osds, errs)
	}
}

// A document that is not an osd tree (here a real `osd dump`, and a tree wrapped in
// another object) is an error naming its source, never zero OSDs.
func TestParseOSDTreeForeignDocument(t *testing.T) {
	for name, doc := range map[string][]byte{
		"dump":    readTestdata(t, "digitalocean-ceph_exporter-osd-dump.json"),
		"wrapped": append(append([]byte(`{"osd_tree":`), readTestdata(t, "osd-tree.json")...), '}'),
	} {
		osds, errs := ParseOSDTree("exec:ceph osd tree", doc)
		if osds != nil || len(errs) != 1 || !strings.Contains(errs[0].Error(), "exec:ceph osd tree: no nodes") {
			t.Errorf("%s: %v %v, want one error naming the source", name, osds, errs)
		}
	}
}

func TestParseOSDDump(t *testing.T) {
	m, errs := ParseOSDDump("dump", readTestdata(t, "digitalocean-ceph_exporter-osd-dump.json"))
	if len(errs) != 0 || len(m.OSDs) != 5 {
		t.Fatalf("%+v %v", m, errs)
	}
	if o := m.OSDs[3]; !o.Up || !o.In || o.Weight != 1 || strings.Join(o.State, ",") != "full,backfillfull,exists,up" {
		t.Errorf("osd.3 %+v", o)
	}
	if o := m.OSDs[4]; o.Up || o.In || o.Weight != 0 {
		t.Errorf("osd.4 (down, out) %+v", o)
	}
	// Flags, weights and a bad entry next to good ones.
	in := `{"epoch":19,"flags":"noout,sortbitwise","osds":[{"osd":0,"up":1,"in":1,"weight":0.5},{"osd":"x"},{"osd":2,"up":0,"in":1,"weight":1}]}`
	m, errs = ParseOSDDump("dump2", []byte(in))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "dump2: osds[1]") {
		t.Fatalf("errors %v, want one naming osds[1]", errs)
	}
	if m.Epoch != 19 || strings.Join(m.Flags, ",") != "noout,sortbitwise" || len(m.OSDs) != 2 || m.OSDs[0].Weight != 0.5 || m.OSDs[2].Up {
		t.Fatalf("%+v", m)
	}
	if _, errs := ParseOSDDump("dump3", readTestdata(t, "osd-tree.json")); len(errs) != 1 || !strings.Contains(errs[0].Error(), "dump3: no osds") {
		t.Fatalf("an osd tree read as a dump: %v", errs)
	}

	// The map is authoritative for up/in/weight and adds OSDs the tree lacks.
	osds, _ := ParseOSDTree("tree", readTestdata(t, "osd-tree.json"))
	s := newSnapshot()
	s.ApplyOSDMap(osds, m)
	if len(s.OSDs) != 3 || s.OSDs[0].Weight != 0.5 || s.OSDs[2].Up || s.OSDs[2].Host != "vm" || !s.OSDs[1].Up || len(s.Flags) != 2 {
		t.Fatalf("applied: %+v %+v %+v flags %v", s.OSDs[0], s.OSDs[1], s.OSDs[2], s.Flags)
	}
	// The records carry them to the store: the weight on each OSD, the flags on the health.
	s.Health = "HEALTH_WARN"
	recs, _ := records(s, nil, time.Now(), "ceph/c", "f", noHosts)
	var weighed, flagged bool
	for _, r := range recs {
		switch r := r.(type) {
		case *pipeline.OSDStat:
			weighed = weighed || r.OSD == 0 && r.Weight == 0.5
		case *pipeline.CephHealth:
			flagged = strings.Join(r.Flags, ",") == "noout,sortbitwise"
		}
	}
	if !weighed || !flagged {
		t.Errorf("records: osd.0 weight 0.5 %v, health flags noout,sortbitwise %v", weighed, flagged)
	}
}

// TestRecordsDeltas checks op latency and rates from _sum/_count deltas, a counter reset
// after an OSD restart, and inventory mapping.
func TestRecordsDeltas(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	hosts := inventory.NewSnapshot(1, inventory.Inventory{Nodes: []inventory.Node{{Name: "vault-1", Site: "nyc", Cluster: "vault", CephHost: "vm"}}})
	snap := func(sum, count, ops float64) *Snapshot {
		s := newSnapshot()
		s.Health = "HEALTH_OK"
		s.OSDs[0] = &OSD{ID: 0, Host: "vm", Up: true, In: true, HasOpCounters: true, WriteLatSum: sum, WriteLatCount: count, WriteOps: ops}
		s.OSDs[1] = &OSD{ID: 1, Host: "elsewhere"}
		return s
	}
	recs, st := records(snap(10, 1000, 1000), nil, t0, "ceph/x", "fsid", hosts)
	if o := recs[0].(*pipeline.OSDStat); o.WriteLatencyMs != 0 || o.M.Node != "vault-1" || o.M.Site != "nyc" || o.FSID != "fsid" {
		t.Fatalf("first sample %+v", o)
	}
	if o := recs[1].(*pipeline.OSDStat); o.M.Node != "" || o.Host != "elsewhere" {
		t.Fatalf("unknown host must be kept, unmapped: %+v", o)
	}
	if h := recs[2].(*pipeline.CephHealth); h.OSDsTotal != 2 || h.OSDsUp != 1 || h.M.Site != "nyc" {
		t.Fatalf("health %+v", h)
	}
	recs, st = records(snap(12, 1500, 1500), st, t0.Add(10*time.Second), "ceph/x", "fsid", hosts)
	if o := recs[0].(*pipeline.OSDStat); o.WriteLatencyMs != 4 || o.WriteOps != 50 {
		t.Fatalf("delta: write latency %v ms, ops %v/s; want 4, 50", o.WriteLatencyMs, o.WriteOps)
	}
	recs, st = records(snap(0.5, 100, 100), st, t0.Add(20*time.Second), "ceph/x", "fsid", hosts)
	if o := recs[0].(*pipeline.OSDStat); o.WriteLatencyMs != 0 || o.WriteOps != 0 {
		t.Fatalf("after a reset: %v ms, %v ops/s; want 0, 0", o.WriteLatencyMs, o.WriteOps)
	}
	recs, _ = records(snap(1.5, 600, 600), st, t0.Add(30*time.Second), "ceph/x", "fsid", hosts)
	if o := recs[0].(*pipeline.OSDStat); o.WriteLatencyMs != 2 || o.WriteOps != 50 {
		t.Fatalf("after the reset settles: %v ms, %v ops/s; want 2, 50", o.WriteLatencyMs, o.WriteOps)
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add(readTestdata(f, "metrics.txt"))
	f.Add([]byte("ceph_osd_up{ceph_daemon=\"osd.4294967296\"} 1\nceph_health_status NaN\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, _ := ParseMetrics("fuzz", b)
		if s == nil {
			t.Fatal("nil snapshot")
		}
		records(s, nil, time.Unix(0, 0), "fuzz", "", noHosts)
	})
}

func FuzzParseJSON(f *testing.F) {
	for _, n := range []string{"osd-perf.json", "status.json", "osd-tree.json", "digitalocean-ceph_exporter-osd-perf.json", "digitalocean-ceph_exporter-osd-dump.json"} {
		f.Add(readTestdata(f, n))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := ParseStatus("fuzz", b); err == nil && s == nil {
			t.Fatal("nil status without error")
		}
		ParseOSDPerf("fuzz", b)
		ParseOSDTree("fuzz", b)
		ParseOSDDump("fuzz", b)
	})
}

func flagSet() *flag.FlagSet { return flag.NewFlagSet("test", flag.PanicOnError) }

// noHosts is an inventory that maps no OSD host.
var noHosts = inventory.NewSnapshot(0, inventory.Inventory{})
