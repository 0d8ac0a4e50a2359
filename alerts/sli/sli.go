// Package sli turns pipeline records into the SLI series the SLO rules read: counters of
// good and bad events and latency histograms, with the labels pop, site, service; and
// into the Ceph state series the built-in Ceph rules read (ceph.go).
// The same series are served on /metrics, so an external Prometheus can evaluate the
// generated rules too.
package sli

import (
	"cmp"
	"math"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Buckets of the latency histograms, in seconds. The SLO specs' thresholds (le=…)
// must be among them.
var (
	ProbeBuckets   = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	CephBuckets    = []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
	ServiceBuckets = prometheus.DefBuckets
)

// SLI is a pipeline.Consumer and a prometheus.Collector of the SLI series.
type SLI struct {
	inv inventory.View // read per record: a POP moved or added is labelled from the next probe

	probeRequests *prometheus.CounterVec
	probeErrors   *prometheus.CounterVec
	probeDuration *prometheus.HistogramVec
	tunnelChecks  *prometheus.CounterVec
	tunnelDown    *prometheus.CounterVec
	cephWrite     *prometheus.HistogramVec
	svcRequests   *prometheus.CounterVec
	svcErrors     *prometheus.CounterVec
	svcDuration   *weightedHistogram
	skipped       *prometheus.CounterVec
	ceph          *cephState
}

// Deps are what the SLI series are given. They have no configuration of their own: the
// buckets are fixed by the SLO thresholds, so New takes no Config.
type Deps struct {
	Inventory inventory.View // maps a POP to its site (nil: site stays empty)
}

// New returns the SLI series. Register them where they are served (they are a
// prometheus.Collector) and hand them to the ruler.
func New(d Deps) *SLI {
	probe := []string{"pop", "site", "service", "vantage"}
	svc := []string{"cluster", "namespace", "service"}
	return &SLI{
		inv: d.Inventory,
		probeRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sli_probe_requests_total",
			Help: "Probes of a POP from a vantage (DNS, TCP, HTTP, ICMP)."}, probe),
		probeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sli_probe_errors_total",
			Help: "Probes of a POP that failed."}, probe),
		probeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meridian_sli_probe_duration_seconds",
			Help: "Round-trip time of successful probes of a POP.", Buckets: ProbeBuckets}, probe),
		tunnelChecks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sli_tunnel_checks_total",
			Help: "WireGuard tunnel samples between two sites."}, []string{"site", "peer_site"}),
		tunnelDown: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sli_tunnel_down_total",
			Help: "WireGuard tunnel samples found down or stale."}, []string{"site", "peer_site"}),
		cephWrite: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meridian_sli_ceph_write_latency_seconds",
			Help: "Write latency of Ceph OSDs, one observation per OSD sample.", Buckets: CephBuckets}, []string{"site", "cluster"}),
		svcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sli_service_requests_total",
			Help: "L7 requests to a service seen by Hubble."}, svc),
		svcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sli_service_errors_total",
			Help: "L7 requests to a service that failed (HTTP 5xx, DNS rcode != 0)."}, svc),
		svcDuration: newWeightedHistogram(prometheus.NewDesc("meridian_sli_service_request_duration_seconds",
			"L7 request latency of a service, estimated from each flow edge's p50/p90/p99.", svc, nil), ServiceBuckets),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_sli_records_skipped_total",
			Help: "Records that could not be turned into SLI events, by kind and reason."}, []string{"kind", "reason"}),
		ceph: newCephState(),
	}
}

func (s *SLI) collectors() []prometheus.Collector {
	return append([]prometheus.Collector{s.probeRequests, s.probeErrors, s.probeDuration, s.tunnelChecks, s.tunnelDown,
		s.cephWrite, s.svcRequests, s.svcErrors, s.svcDuration, s.skipped}, s.ceph.collectors()...)
}

// Describe implements prometheus.Collector.
func (s *SLI) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s *SLI) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.collectors() {
		c.Collect(ch)
	}
}

// Consume implements pipeline.Consumer.
func (s *SLI) Consume(recs []pipeline.Record) {
	for _, r := range recs {
		switch r := r.(type) {
		case *pipeline.Probe:
			s.probe(r)
		case *pipeline.TunnelStat:
			s.tunnel(r)
		case *pipeline.OSDStat:
			s.ceph.osd(r)
			s.osd(r)
		case *pipeline.CephHealth:
			if !s.ceph.health(r) {
				s.skip(r.Kind(), "unknown_health_status")
			}
		case *pipeline.FlowEdge:
			s.edge(r)
		}
	}
}

func (s *SLI) skip(k pipeline.Kind, reason string) {
	s.skipped.WithLabelValues(k.String(), reason).Inc()
}

func (s *SLI) probe(p *pipeline.Probe) {
	if p.POP == "" {
		s.skip(p.Kind(), "no_pop")
		return
	}
	site := ""
	if s.inv != nil {
		if pop, ok := s.inv.Snapshot().POP(p.POP); ok {
			site = pop.Site
		}
	}
	l := prometheus.Labels{"pop": p.POP, "site": site, "service": p.Service, "vantage": p.Vantage}
	s.probeRequests.With(l).Inc()
	errs := s.probeErrors.With(l) // created at zero so the error ratio exists before the first failure
	if !p.Success {
		errs.Inc()
		return
	}
	s.probeDuration.With(l).Observe(p.RTT.Seconds())
}

func (s *SLI) tunnel(t *pipeline.TunnelStat) {
	if t.Status == pipeline.StatusUnknown || t.Status == "" {
		s.skip(t.Kind(), "status_unknown")
		return
	}
	s.tunnelChecks.WithLabelValues(t.M.Site, t.PeerSite).Inc()
	down := s.tunnelDown.WithLabelValues(t.M.Site, t.PeerSite)
	if t.Status == pipeline.StatusDown || t.Status == pipeline.StatusDegraded {
		down.Inc()
	}
}

// osd observes an up OSD's write latency. A latency of 0 is unknown, not good: no write
// completed in the interval (idle, the first scrape) or the source has no op counters
// (the ceph CLI); counting it as a 0 s event would dilute a real burn.
func (s *SLI) osd(o *pipeline.OSDStat) {
	switch {
	case !o.Up:
		s.skip(o.Kind(), "osd_down")
		return
	case !(o.WriteLatencyMs > 0) || math.IsInf(o.WriteLatencyMs, 0):
		s.skip(o.Kind(), "latency_unknown")
		return
	}
	s.cephWrite.WithLabelValues(o.M.Site, o.M.Cluster).Observe(o.WriteLatencyMs / 1000)
}

func (s *SLI) edge(e *pipeline.FlowEdge) {
	if e.Requests == 0 {
		return // L4-only edge: no request SLI
	}
	if e.DestWorkload == "" {
		s.skip(e.Kind(), "no_destination")
		return
	}
	if e.SourceCluster != "" {
		// The server's relay's view of a call across the mesh: the client's relay reports
		// the same call (with the failures that never reached the server), counted once.
		s.skip(e.Kind(), "server_view")
		return
	}
	lv := []string{cmp.Or(e.DestCluster, e.M.Cluster), e.DestNamespace, e.DestWorkload} // the service's own cluster
	s.svcRequests.WithLabelValues(lv...).Add(float64(e.Requests))
	s.svcErrors.WithLabelValues(lv...).Add(float64(min(e.Errors, e.Requests)))
	// Hubble gives percentiles, not a distribution: put 50% of the requests at p50,
	// 40% at p90 and the last 10% at p99. The tail above p99 is unknown and counted at
	// p99, so a latency SLI can only be as strict as the p99 the edge reports.
	n := float64(e.Requests)
	s.svcDuration.observe(lv, []weighted{
		{e.LatencyP50.Seconds(), 0.5 * n},
		{e.LatencyP90.Seconds(), 0.4 * n},
		{e.LatencyP99.Seconds(), 0.1 * n},
	})
}

type weighted struct{ value, count float64 }

// weightedHistogram is a histogram vector that accepts observations with a weight,
// exposed as a real Prometheus histogram.
type weightedHistogram struct {
	desc    *prometheus.Desc
	buckets []float64
	mu      sync.Mutex
	series  map[string]*histState
}

type histState struct {
	labels []string
	counts []float64 // per bucket, not cumulative
	count  float64
	sum    float64
}

func newWeightedHistogram(desc *prometheus.Desc, buckets []float64) *weightedHistogram {
	return &weightedHistogram{desc: desc, buckets: buckets, series: map[string]*histState{}}
}

func (h *weightedHistogram) observe(lv []string, obs []weighted) {
	key := ""
	for _, v := range lv {
		key += v + "\xff"
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.series[key]
	if !ok {
		st = &histState{labels: slices.Clone(lv), counts: make([]float64, len(h.buckets))}
		h.series[key] = st
	}
	for _, o := range obs {
		if o.count <= 0 || math.IsNaN(o.value) {
			continue
		}
		st.count += o.count
		st.sum += o.value * o.count
		if i, _ := slices.BinarySearch(h.buckets, o.value); i < len(h.buckets) {
			st.counts[i] += o.count
		}
	}
}

func (h *weightedHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *weightedHistogram) Collect(ch chan<- prometheus.Metric) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, st := range h.series {
		cum := map[float64]uint64{}
		var c float64
		for i, b := range h.buckets {
			c += st.counts[i]
			cum[b] = uint64(math.Round(c))
		}
		ch <- prometheus.MustNewConstHistogram(h.desc, uint64(math.Round(st.count)), st.sum, cum, st.labels...)
	}
}
