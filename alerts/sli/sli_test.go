package sli

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

func TestSeries(t *testing.T) {
	inv := &inventory.Inventory{POPs: []inventory.POP{{Name: "lon", Site: "london"}}}
	s := New(Deps{Inventory: inventory.Static(inv)})
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	ms := time.Millisecond
	s.Consume([]pipeline.Record{
		&pipeline.Probe{Vantage: "nyc-1", POP: "lon", Service: "api", Success: true, RTT: 40 * ms},
		&pipeline.Probe{Vantage: "nyc-1", POP: "lon", Service: "api", Success: true, RTT: 400 * ms},
		&pipeline.Probe{Vantage: "nyc-1", POP: "lon", Service: "api", Success: false, Error: "timeout"},
		&pipeline.Probe{Vantage: "nyc-1", POP: "", Service: "api", Success: true}, // unmapped answer: skipped
		&pipeline.TunnelStat{M: pipeline.Meta{Site: "nyc"}, PeerSite: "tokyo", Status: pipeline.StatusOK},
		&pipeline.TunnelStat{M: pipeline.Meta{Site: "nyc"}, PeerSite: "tokyo", Status: pipeline.StatusDegraded},
		&pipeline.TunnelStat{M: pipeline.Meta{Site: "nyc"}, PeerSite: "tokyo", Status: pipeline.StatusUnknown},
		&pipeline.OSDStat{M: pipeline.Meta{Site: "nyc", Cluster: "vault"}, Up: true, WriteLatencyMs: 0.9},
		&pipeline.OSDStat{M: pipeline.Meta{Site: "nyc", Cluster: "vault"}, Up: true, WriteLatencyMs: 12},
		&pipeline.OSDStat{M: pipeline.Meta{Site: "nyc", Cluster: "vault"}, Up: false},
		&pipeline.OSDStat{M: pipeline.Meta{Site: "nyc", Cluster: "vault"}, Up: true}, // idle: latency unknown, not 0 s
		&pipeline.FlowEdge{M: pipeline.Meta{Cluster: "destroyer"}, DestNamespace: "shop", DestWorkload: "api", Requests: 100, Errors: 3,
			LatencyP50: 20 * ms, LatencyP90: 200 * ms, LatencyP99: 900 * ms},
		&pipeline.FlowEdge{M: pipeline.Meta{Cluster: "destroyer"}, DestNamespace: "shop", DestWorkload: "db", Flows: 5}, // L4 only
	})
	want := `
# HELP meridian_sli_probe_requests_total Probes of a POP from a vantage (DNS, TCP, HTTP, ICMP).
# TYPE meridian_sli_probe_requests_total counter
meridian_sli_probe_requests_total{pop="lon",service="api",site="london",vantage="nyc-1"} 3
# HELP meridian_sli_probe_errors_total Probes of a POP that failed.
# TYPE meridian_sli_probe_errors_total counter
meridian_sli_probe_errors_total{pop="lon",service="api",site="london",vantage="nyc-1"} 1
# HELP meridian_sli_tunnel_checks_total WireGuard tunnel samples between two sites.
# TYPE meridian_sli_tunnel_checks_total counter
meridian_sli_tunnel_checks_total{peer_site="tokyo",site="nyc"} 2
# HELP meridian_sli_tunnel_down_total WireGuard tunnel samples found down or stale.
# TYPE meridian_sli_tunnel_down_total counter
meridian_sli_tunnel_down_total{peer_site="tokyo",site="nyc"} 1
# HELP meridian_sli_service_requests_total L7 requests to a service seen by Hubble.
# TYPE meridian_sli_service_requests_total counter
meridian_sli_service_requests_total{cluster="destroyer",namespace="shop",service="api"} 100
# HELP meridian_sli_service_errors_total L7 requests to a service that failed (HTTP 5xx, DNS rcode != 0).
# TYPE meridian_sli_service_errors_total counter
meridian_sli_service_errors_total{cluster="destroyer",namespace="shop",service="api"} 3
# HELP meridian_sli_records_skipped_total Records that could not be turned into SLI events, by kind and reason.
# TYPE meridian_sli_records_skipped_total counter
meridian_sli_records_skipped_total{kind="osd_stat",reason="latency_unknown"} 1
meridian_sli_records_skipped_total{kind="osd_stat",reason="osd_down"} 1
meridian_sli_records_skipped_total{kind="probe",reason="no_pop"} 1
meridian_sli_records_skipped_total{kind="tunnel_stat",reason="status_unknown"} 1
`
	names := []string{"meridian_sli_probe_requests_total", "meridian_sli_probe_errors_total", "meridian_sli_tunnel_checks_total",
		"meridian_sli_tunnel_down_total", "meridian_sli_service_requests_total", "meridian_sli_service_errors_total", "meridian_sli_records_skipped_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	// Histograms: the failed probe has no latency; the slow probe is over 250 ms.
	hist := func(name, le string) (bucket, count float64) {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			h := mf.GetMetric()[0].GetHistogram()
			for _, b := range h.GetBucket() {
				if strconv.FormatFloat(b.GetUpperBound(), 'f', -1, 64) == le {
					bucket = float64(b.GetCumulativeCount())
				}
			}
			return bucket, float64(h.GetSampleCount())
		}
		t.Fatalf("no %s", name)
		return 0, 0
	}
	if b, c := hist("meridian_sli_probe_duration_seconds", "0.25"); b != 1 || c != 2 {
		t.Errorf("probe histogram: %v of %v under 250ms, want 1 of 2", b, c)
	}
	if b, c := hist("meridian_sli_ceph_write_latency_seconds", "0.005"); b != 1 || c != 2 {
		t.Errorf("ceph histogram: %v of %v under 5ms, want 1 of 2", b, c)
	}
	// 100 requests at p50 20ms, p90 200ms, p99 900ms: 50 under 25ms, 90 under 250ms, all under 1s.
	for le, want := range map[string]float64{"0.025": 50, "0.25": 90, "0.5": 90, "1": 100} {
		if b, c := hist("meridian_sli_service_request_duration_seconds", le); b != want || c != 100 {
			t.Errorf("service histogram le=%s: %v of %v, want %v of 100", le, b, c, want)
		}
	}
}

// TestServiceSLIDestCluster: a request across the mesh counts for the service in its own
// cluster, the edge's destination cluster, not the caller's; once, from the client's
// relay: the server's relay's view of the same requests is skipped.
func TestServiceSLIDestCluster(t *testing.T) {
	s := New(Deps{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	s.Consume([]pipeline.Record{
		&pipeline.FlowEdge{M: pipeline.Meta{Cluster: "ny-destroyer"}, DestNamespace: "shop", DestWorkload: "api", DestCluster: "nbg-aegis", Requests: 10, Errors: 10},
		&pipeline.FlowEdge{M: pipeline.Meta{Cluster: "ny-destroyer"}, DestNamespace: "shop", DestWorkload: "api", Requests: 5},
		&pipeline.FlowEdge{M: pipeline.Meta{Cluster: "nbg-aegis"}, SourceCluster: "ny-destroyer", DestNamespace: "shop", DestWorkload: "api", Requests: 7, Errors: 3},
	})
	want := `
# HELP meridian_sli_service_errors_total L7 requests to a service that failed (HTTP 5xx, DNS rcode != 0).
# TYPE meridian_sli_service_errors_total counter
meridian_sli_service_errors_total{cluster="nbg-aegis",namespace="shop",service="api"} 10
meridian_sli_service_errors_total{cluster="ny-destroyer",namespace="shop",service="api"} 0
# HELP meridian_sli_records_skipped_total Records that could not be turned into SLI events, by kind and reason.
# TYPE meridian_sli_records_skipped_total counter
meridian_sli_records_skipped_total{kind="flow_edge",reason="server_view"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "meridian_sli_service_errors_total", "meridian_sli_records_skipped_total"); err != nil {
		t.Error(err)
	}
}

// The Ceph state series follow the records: a cleared health check goes to 0 (so the
// rules resolve) rather than vanishing or staying at 1.
func TestCephState(t *testing.T) {
	s := New(Deps{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	m := pipeline.Meta{Site: "nyc", Cluster: "vault"}
	s.Consume([]pipeline.Record{
		&pipeline.CephHealth{M: m, FSID: "f1", Status: "HEALTH_WARN", Checks: []string{"OSD_DOWN", "SLOW_OPS"}, OSDsTotal: 3, OSDsUp: 2, OSDsIn: 3},
		&pipeline.OSDStat{M: m, FSID: "f1", OSD: 2, Host: "vault-1", Up: false, In: true},
	})
	s.Consume([]pipeline.Record{
		&pipeline.CephHealth{M: m, FSID: "f1", Status: "HEALTH_WARN", Checks: []string{"SLOW_OPS"}, OSDsTotal: 3, OSDsUp: 3, OSDsIn: 3},
		&pipeline.CephHealth{M: m, FSID: "f1", Status: "BOGUS"},
	})
	want := `
# HELP meridian_ceph_cluster_health_check 1 while the Ceph health check (e.g. OSD_DOWN) is active, 0 once it cleared (as ceph_health_detail).
# TYPE meridian_ceph_cluster_health_check gauge
meridian_ceph_cluster_health_check{check="OSD_DOWN",cluster="vault",fsid="f1",site="nyc"} 0
meridian_ceph_cluster_health_check{check="SLOW_OPS",cluster="vault",fsid="f1",site="nyc"} 1
# HELP meridian_ceph_cluster_health_status Ceph cluster health: 0 HEALTH_OK, 1 HEALTH_WARN, 2 HEALTH_ERR (as ceph_health_status).
# TYPE meridian_ceph_cluster_health_status gauge
meridian_ceph_cluster_health_status{cluster="vault",fsid="f1",site="nyc"} 1
# HELP meridian_ceph_cluster_osds OSDs of a Ceph cluster by state: total, up, in.
# TYPE meridian_ceph_cluster_osds gauge
meridian_ceph_cluster_osds{cluster="vault",fsid="f1",site="nyc",state="in"} 3
meridian_ceph_cluster_osds{cluster="vault",fsid="f1",site="nyc",state="total"} 3
meridian_ceph_cluster_osds{cluster="vault",fsid="f1",site="nyc",state="up"} 3
# HELP meridian_ceph_osd_up 1 while the OSD is up (as ceph_osd_up).
# TYPE meridian_ceph_osd_up gauge
meridian_ceph_osd_up{cluster="vault",fsid="f1",host="vault-1",osd="2",site="nyc"} 0
# HELP meridian_sli_records_skipped_total Records that could not be turned into SLI events, by kind and reason.
# TYPE meridian_sli_records_skipped_total counter
meridian_sli_records_skipped_total{kind="ceph_health",reason="unknown_health_status"} 1
meridian_sli_records_skipped_total{kind="osd_stat",reason="osd_down"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "meridian_ceph_cluster_health_check", "meridian_ceph_cluster_health_status",
		"meridian_ceph_cluster_osds", "meridian_ceph_osd_up", "meridian_sli_records_skipped_total"); err != nil {
		t.Error(err)
	}
}
