package sli

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/pipeline"
)

// cephState is the Ceph cluster and OSD state the built-in Ceph rules read
// (alerts/builtin/ceph.yml): from CephHealth and OSDStat records, so the mgr and the CLI
// sources both feed it and it reaches a ruler in another process through the pipeline.
// Its cardinality is the clusters' health checks (Ceph defines about a hundred) and OSDs.
type cephState struct {
	mu     sync.Mutex
	seen   map[[3]string]map[string]bool // cluster key -> checks ever seen, to zero cleared ones
	status *prometheus.GaugeVec
	checks *prometheus.GaugeVec
	osds   *prometheus.GaugeVec
	osdUp  *prometheus.GaugeVec
	osdIn  *prometheus.GaugeVec
}

func newCephState() *cephState {
	cl := []string{"site", "cluster", "fsid"}
	osd := []string{"site", "cluster", "fsid", "osd", "host"}
	return &cephState{
		seen: map[[3]string]map[string]bool{},
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_ceph_cluster_health_status",
			Help: "Ceph cluster health: 0 HEALTH_OK, 1 HEALTH_WARN, 2 HEALTH_ERR (as ceph_health_status)."}, cl),
		checks: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_ceph_cluster_health_check",
			Help: "1 while the Ceph health check (e.g. OSD_DOWN) is active, 0 once it cleared (as ceph_health_detail)."}, append(cl, "check")),
		osds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_ceph_cluster_osds",
			Help: "OSDs of a Ceph cluster by state: total, up, in."}, append(cl, "state")),
		osdUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_ceph_osd_up",
			Help: "1 while the OSD is up (as ceph_osd_up)."}, osd),
		osdIn: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_ceph_osd_in",
			Help: "1 while the OSD is in (as ceph_osd_in)."}, osd),
	}
}

func (c *cephState) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.status, c.checks, c.osds, c.osdUp, c.osdIn}
}

var healthValue = map[string]float64{"HEALTH_OK": 0, "HEALTH_WARN": 1, "HEALTH_ERR": 2}

func (c *cephState) health(h *pipeline.CephHealth) bool {
	v, ok := healthValue[h.Status]
	if !ok {
		return false
	}
	key := [3]string{h.M.Site, h.M.Cluster, h.FSID}
	c.status.WithLabelValues(key[:]...).Set(v)
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := c.seen[key]
	if seen == nil {
		seen = map[string]bool{}
		c.seen[key] = seen
	}
	active := map[string]bool{}
	for _, name := range h.Checks {
		active[name] = true
		seen[name] = true
	}
	for name := range seen {
		c.checks.WithLabelValues(h.M.Site, h.M.Cluster, h.FSID, name).Set(b2f(active[name]))
	}
	for state, n := range map[string]uint32{"total": h.OSDsTotal, "up": h.OSDsUp, "in": h.OSDsIn} {
		c.osds.WithLabelValues(h.M.Site, h.M.Cluster, h.FSID, state).Set(float64(n))
	}
	return true
}

func (c *cephState) osd(o *pipeline.OSDStat) {
	l := []string{o.M.Site, o.M.Cluster, o.FSID, strconv.FormatUint(uint64(o.OSD), 10), o.Host}
	c.osdUp.WithLabelValues(l...).Set(b2f(o.Up))
	c.osdIn.WithLabelValues(l...).Set(b2f(o.In))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
