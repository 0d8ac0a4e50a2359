package ceph

import (
	"sort"
	"time"

	"github.com/meridianhq/meridian/collectors/scrape"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// prevState is the previous good snapshot of one source, for deltas. A failed scrape
// leaves it untouched, so the next good one computes rates over the whole gap.
type prevState struct {
	at    time.Time
	osds  map[uint32]OSD
	pools map[uint32]Pool
}

// records turns a snapshot into records, computing rates and op latencies against prev
// (nil on the first scrape: rates 0), and returns the state for the next scrape.
func records(s *Snapshot, prev *prevState, now time.Time, collector, fsid string, hosts *inventory.Snapshot) ([]pipeline.Record, *prevState) {
	if s.FSID != "" {
		fsid = s.FSID
	}
	next := &prevState{at: now, osds: make(map[uint32]OSD, len(s.OSDs)), pools: make(map[uint32]Pool, len(s.Pools))}
	var dt time.Duration
	if prev != nil {
		dt = now.Sub(prev.at)
	}
	ids := make([]uint32, 0, len(s.OSDs))
	for id := range s.OSDs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })

	recs := make([]pipeline.Record, 0, len(s.OSDs)+len(s.Pools)+1)
	osdStats := make([]pipeline.OSDStat, len(ids))
	var up, in uint32
	sites, clusters := map[string]bool{}, map[string]bool{}
	for i, id := range ids {
		o := s.OSDs[id]
		next.osds[id] = *o
		r := &osdStats[i]
		*r = pipeline.OSDStat{
			M:    pipeline.Meta{Time: now, Collector: collector},
			FSID: fsid, OSD: id, Host: o.Host, DeviceClass: o.DeviceClass, Up: o.Up, In: o.In, Weight: o.Weight,
			CommitLatencyMs: o.CommitLatencyMs, ApplyLatencyMs: o.ApplyLatencyMs,
		}
		if n, ok := hosts.NodeByCephHost(o.Host); ok && o.Host != "" {
			r.M.Site, r.M.Cluster, r.M.Node = n.Site, n.Cluster, n.Name
			sites[n.Site], clusters[n.Cluster] = true, true
		}
		if p, ok := prev.osd(id); ok && o.HasOpCounters && p.HasOpCounters {
			r.ReadLatencyMs = meanMs(p.ReadLatSum, o.ReadLatSum, p.ReadLatCount, o.ReadLatCount)
			r.WriteLatencyMs = meanMs(p.WriteLatSum, o.WriteLatSum, p.WriteLatCount, o.WriteLatCount)
			r.ReadOps = scrape.Rate(p.ReadOps, o.ReadOps, dt)
			r.WriteOps = scrape.Rate(p.WriteOps, o.WriteOps, dt)
			r.ReadBytes = scrape.Rate(p.ReadBytes, o.ReadBytes, dt)
			r.WriteBytes = scrape.Rate(p.WriteBytes, o.WriteBytes, dt)
		}
		if o.Up {
			up++
		}
		if o.In {
			in++
		}
		recs = append(recs, r)
	}
	// Health and pool records belong to the cluster: give them its site and inventory
	// cluster when all its OSD hosts are in one.
	site, cluster := only(sites), only(clusters)
	if s.Health != "" {
		h := &pipeline.CephHealth{
			M:    pipeline.Meta{Time: now, Collector: collector, Site: site, Cluster: cluster},
			FSID: fsid, Status: s.Health, Checks: s.Checks,
			OSDsTotal: uint32(len(ids)), OSDsUp: up, OSDsIn: in, Flags: s.Flags,
		}
		if c := s.OSDCounts; c != nil {
			h.OSDsTotal, h.OSDsUp, h.OSDsIn = c[0], c[1], c[2]
		}
		recs = append(recs, h)
	}
	for id, p := range s.Pools {
		next.pools[id] = *p
		r := &pipeline.CephPool{
			M:    pipeline.Meta{Time: now, Collector: collector, Site: site, Cluster: cluster},
			FSID: fsid, Pool: p.Name, PoolID: id, StoredBytes: uint64(max(p.Stored, 0)),
		}
		if prev != nil {
			if q, ok := prev.pools[id]; ok {
				r.ReadOps = scrape.Rate(q.ReadOps, p.ReadOps, dt)
				r.WriteOps = scrape.Rate(q.WriteOps, p.WriteOps, dt)
				r.ReadBytes = scrape.Rate(q.ReadBytes, p.ReadBytes, dt)
				r.WriteBytes = scrape.Rate(q.WriteBytes, p.WriteBytes, dt)
			}
		}
		recs = append(recs, r)
	}
	return recs, next
}

func (p *prevState) osd(id uint32) (OSD, bool) {
	if p == nil {
		return OSD{}, false
	}
	o, ok := p.osds[id]
	return o, ok
}

// meanMs is the mean latency in ms of the ops counted between two samples of a
// _sum (seconds) / _count pair; 0 without new ops or across a counter reset (restart).
func meanMs(sum0, sum1, n0, n1 float64) float64 {
	if n1 <= n0 || sum1 < sum0 {
		return 0
	}
	return (sum1 - sum0) / (n1 - n0) * 1000
}

// only returns the one key of set, or "" when it has none or several.
func only(set map[string]bool) string {
	if len(set) != 1 {
		return ""
	}
	for k := range set {
		return k
	}
	return ""
}
