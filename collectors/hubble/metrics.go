package hubble

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	received         *prometheus.CounterVec
	stored           *prometheus.CounterVec
	duplicates       *prometheus.CounterVec
	malformed        *prometheus.CounterVec
	sampled          *prometheus.CounterVec
	overloaded       *prometheus.GaugeVec
	overloadSeconds  *prometheus.CounterVec
	incomplete       *prometheus.CounterVec
	lost             *prometheus.CounterVec
	edges            *prometheus.CounterVec
	overflow         *prometheus.CounterVec
	relayErrors      *prometheus.CounterVec
	checkpointErrors *prometheus.CounterVec
	connected        *prometheus.GaugeVec
	lastFlowTime     *prometheus.GaugeVec
	owned            *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		received: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_flows_received_total",
			Help: "Flows received from a relay, duplicates of a resumed stream excluded."}, []string{"relay"}),
		stored: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_flows_stored_total",
			Help: "Raw flow records appended to the pipeline after sampling."}, []string{"relay"}),
		duplicates: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_flows_duplicate_total",
			Help: "Flows dropped because a resumed stream sent them again."}, []string{"relay"}),
		malformed: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_flows_malformed_total",
			Help: "Messages from a relay that are not valid protobuf, skipped (logged)."}, []string{"relay"}),
		sampled: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_flows_sampled_total",
			Help: "Raw flows counted in the edges but not stored, by why: rate (flow_sample_rate) or overload (overload: sample)."}, []string{"relay", "reason"}),
		overloaded: f.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_hubble_overloaded",
			Help: "1 while flows arrive from the relay faster than they are stored (its stream is slowed down, or sampled)."}, []string{"relay"}),
		overloadSeconds: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_overload_seconds_total",
			Help: "Time spent overloaded, counted when each episode ends."}, []string{"relay"}),
		incomplete: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_flows_incomplete_total",
			Help: "Flows stored with missing parts, by what was missing (time, source, destination, l4)."}, []string{"relay", "missing"}),
		lost: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_lost_events_total",
			Help: "Events Hubble reported lost, by where they were lost (perf ring, observer queue, relay, ...)."}, []string{"relay", "source"}),
		edges: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_edges_total",
			Help: "Workload edge records appended to the pipeline."}, []string{"relay"}),
		overflow: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_edge_overflow_flows_total",
			Help: "Flows counted in the \"other\" edge because an interval reached max_pairs workload pairs."}, []string{"relay"}),
		relayErrors: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_relay_errors_total",
			Help: "Failed connections or streams to a relay; each is retried with backoff."}, []string{"relay"}),
		checkpointErrors: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_hubble_checkpoint_errors_total",
			Help: "Resume points that could not be read at start or saved at stop; the relay is then asked for backfill."}, []string{"relay"}),
		connected: f.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_hubble_relay_connected",
			Help: "1 while a flow stream from the relay is open."}, []string{"relay"}),
		lastFlowTime: f.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_hubble_last_flow_timestamp_seconds",
			Help: "Time of the newest flow received from the relay: the resume point."}, []string{"relay"}),
		owned: f.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_hubble_relay_owned",
			Help: "1 when this collector replica streams the relay (always, unless collector_ring shards the relays)."}, []string{"relay"}),
	}
}
