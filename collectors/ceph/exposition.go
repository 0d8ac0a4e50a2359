// Package ceph collects Ceph's storage-plane state: per-OSD commit/apply and read/write
// op latency (ms), up/in, host; cluster health and its checks; pool I/O. It reads the
// ceph-mgr `prometheus` module's /metrics and, optionally, the `ceph` CLI's JSON
// documents, and emits pipeline.OSDStat, CephHealth and CephPool records mapped to the
// inventory.
package ceph

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/meridianhq/meridian/collectors/scrape"
)

// Snapshot is one read of a cluster, before deltas: counters are cumulative.
type Snapshot struct {
	FSID   string   // "" when the source does not say (the mgr exposition does not)
	Health string   // HEALTH_OK, HEALTH_WARN, HEALTH_ERR; "" when the source does not say
	Checks []string // active health checks, e.g. OSD_DOWN
	OSDs   map[uint32]*OSD
	Pools  map[uint32]*Pool
	// OSDCounts, when set, overrides counting OSDs (a `ceph -s` document gives totals).
	OSDCounts *[3]uint32 // total, up, in
	Flags     []string   // OSD map flags (`ceph osd dump`), e.g. noout; nil when not read
}

// ApplyOSDMap sets osds' up, in and weight from the OSD map, which is authoritative
// for them (the tree only shows OSDs placed in CRUSH), adds the map's OSDs the tree
// lacks, and stores the result and the map's flags in s.
func (s *Snapshot) ApplyOSDMap(osds map[uint32]*OSD, m *OSDMap) {
	for id, e := range m.OSDs {
		o := osds[id]
		if o == nil {
			o = &OSD{ID: id}
			osds[id] = o
		}
		o.Up, o.In, o.Weight = e.Up, e.In, e.Weight
	}
	s.OSDs, s.Flags = osds, m.Flags
}

// OSD is one OSD in a snapshot. Latencies are in ms; op counters are cumulative.
type OSD struct {
	ID              uint32
	Host            string
	DeviceClass     string
	Up, In          bool
	Weight          float64 // override reweight from `ceph osd dump` (0 = out, 1 = full); 0 when not read
	CommitLatencyMs float64
	ApplyLatencyMs  float64
	// Cumulative op counters; ReadLatSum/WriteLatSum are in seconds (ceph-mgr exports
	// perf counters of type time in seconds in every release since Luminous).
	ReadLatSum, ReadLatCount   float64
	WriteLatSum, WriteLatCount float64
	ReadOps, WriteOps          float64
	ReadBytes, WriteBytes      float64
	HasOpCounters              bool
}

// Pool is one pool's cumulative I/O counters.
type Pool struct {
	ID                    uint32
	Name                  string
	ReadOps, WriteOps     float64
	ReadBytes, WriteBytes float64
	Stored                float64
}

func newSnapshot() *Snapshot {
	return &Snapshot{OSDs: map[uint32]*OSD{}, Pools: map[uint32]*Pool{}}
}

func (s *Snapshot) osd(id uint32) *OSD {
	o := s.OSDs[id]
	if o == nil {
		o = &OSD{ID: id}
		s.OSDs[id] = o
	}
	return o
}

func (s *Snapshot) pool(id uint32) *Pool {
	p := s.Pools[id]
	if p == nil {
		p = &Pool{ID: id}
		s.Pools[id] = p
	}
	return p
}

// healthNames maps ceph_health_status's value to Ceph's names.
var healthNames = []string{"HEALTH_OK", "HEALTH_WARN", "HEALTH_ERR"}

// ParseMetrics parses a ceph-mgr prometheus-module exposition (or ceph-exporter's, or
// digitalocean/ceph_exporter's latency gauges). Bad lines and series with an unusable
// ceph_daemon/pool_id are reported and skipped; the rest passes.
func ParseMetrics(source string, b []byte) (*Snapshot, []error) {
	s := newSnapshot()
	var errs []error
	bad := func(sm scrape.Sample, why string) {
		errs = append(errs, fmt.Errorf("%s: series %s: %s", source, sm.Labels, why))
	}
	osdOf := func(sm scrape.Sample) *OSD {
		d := sm.Labels.Get("ceph_daemon")
		if d == "" {
			d = sm.Labels.Get("osd") // digitalocean/ceph_exporter: osd="osd.0"
		}
		id, err := strconv.ParseUint(strings.TrimPrefix(d, "osd."), 10, 32)
		if err != nil || !strings.HasPrefix(d, "osd.") {
			bad(sm, "ceph_daemon is not osd.<id>")
			return nil
		}
		return s.osd(uint32(id))
	}
	poolOf := func(sm scrape.Sample) *Pool {
		id, err := strconv.ParseUint(sm.Labels.Get("pool_id"), 10, 32)
		if err != nil {
			bad(sm, "pool_id is not a number")
			return nil
		}
		return s.pool(uint32(id))
	}
	errs = append(errs, scrape.Exposition(source, b, wanted, func(sm scrape.Sample) {
		v := sm.Value
		if math.IsNaN(v) || math.IsInf(v, 0) {
			bad(sm, "value is not finite")
			return
		}
		switch sm.Name {
		case "ceph_health_status":
			if i := int(v); float64(i) == v && i >= 0 && i < len(healthNames) {
				s.Health = healthNames[i]
			} else {
				bad(sm, "health status is not 0, 1 or 2")
			}
		case "ceph_health_detail":
			if v == 1 {
				s.Checks = append(s.Checks, sm.Labels.Get("name"))
			}
		case "ceph_pool_metadata":
			if p := poolOf(sm); p != nil {
				p.Name = sm.Labels.Get("name")
			}
		case "ceph_pool_rd", "ceph_pool_wr", "ceph_pool_rd_bytes", "ceph_pool_wr_bytes", "ceph_pool_stored":
			p := poolOf(sm)
			if p == nil {
				return
			}
			switch sm.Name {
			case "ceph_pool_rd":
				p.ReadOps = v
			case "ceph_pool_wr":
				p.WriteOps = v
			case "ceph_pool_rd_bytes":
				p.ReadBytes = v
			case "ceph_pool_wr_bytes":
				p.WriteBytes = v
			case "ceph_pool_stored":
				p.Stored = v
			}
		default:
			o := osdOf(sm)
			if o == nil {
				return
			}
			switch sm.Name {
			case "ceph_osd_metadata":
				o.Host = sm.Labels.Get("hostname")
				o.DeviceClass = sm.Labels.Get("device_class")
			case "ceph_osd_up":
				o.Up = v == 1
			case "ceph_osd_in":
				o.In = v == 1
			case "ceph_osd_commit_latency_ms":
				o.CommitLatencyMs = v
			case "ceph_osd_apply_latency_ms":
				o.ApplyLatencyMs = v
			case "ceph_osd_perf_commit_latency_seconds":
				o.CommitLatencyMs = v * 1000
			case "ceph_osd_perf_apply_latency_seconds":
				o.ApplyLatencyMs = v * 1000
			default:
				o.HasOpCounters = true
				switch sm.Name {
				case "ceph_osd_op_r_latency_sum":
					o.ReadLatSum = v
				case "ceph_osd_op_r_latency_count":
					o.ReadLatCount = v
				case "ceph_osd_op_w_latency_sum":
					o.WriteLatSum = v
				case "ceph_osd_op_w_latency_count":
					o.WriteLatCount = v
				case "ceph_osd_op_r":
					o.ReadOps = v
				case "ceph_osd_op_w":
					o.WriteOps = v
				case "ceph_osd_op_r_out_bytes":
					o.ReadBytes = v
				case "ceph_osd_op_w_in_bytes":
					o.WriteBytes = v
				}
			}
		}
	})...)
	return s, errs
}

// wanted filters series by name before textparse builds their labels: a ceph-mgr
// exposition holds ~500 series per OSD, of which this package reads a dozen.
func wanted(name []byte) bool {
	switch string(name) {
	case "ceph_health_status", "ceph_health_detail",
		"ceph_pool_metadata", "ceph_pool_rd", "ceph_pool_wr", "ceph_pool_rd_bytes", "ceph_pool_wr_bytes", "ceph_pool_stored",
		"ceph_osd_metadata", "ceph_osd_up", "ceph_osd_in",
		"ceph_osd_commit_latency_ms", "ceph_osd_apply_latency_ms",
		"ceph_osd_perf_commit_latency_seconds", "ceph_osd_perf_apply_latency_seconds",
		"ceph_osd_op_r_latency_sum", "ceph_osd_op_r_latency_count",
		"ceph_osd_op_w_latency_sum", "ceph_osd_op_w_latency_count",
		"ceph_osd_op_r", "ceph_osd_op_w", "ceph_osd_op_r_out_bytes", "ceph_osd_op_w_in_bytes":
		return true
	}
	return false
}
