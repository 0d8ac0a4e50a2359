package topomap

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	records    prometheus.Counter
	deltas     prometheus.Counter
	deltaBytes prometheus.Histogram
	delay      prometheus.Histogram
	sentBytes  prometheus.Counter
	snapshots  prometheus.Counter
	slow       prometheus.Counter
	clients    prometheus.Gauge
	rejected   *prometheus.CounterVec
	resumes    *prometheus.CounterVec

	rebuilds      prometheus.Histogram
	historyErrors *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, m *Map) (*metrics, error) {
	mt := &metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_topomap_records_total", Help: "Pipeline records folded into the live graph.",
		}),
		deltas: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_topomap_deltas_total", Help: "Deltas published (one per tick with changes).",
		}),
		deltaBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meridian_topomap_delta_bytes", Help: "Encoded size of each published delta.",
			Buckets: prometheus.ExponentialBuckets(256, 4, 9),
		}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meridian_topomap_update_delay_seconds", Help: "Time from the oldest change in a delta to its publication.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		sentBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_topomap_sent_bytes_total", Help: "Bytes written to websocket clients.",
		}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_topomap_snapshots_sent_total", Help: "Snapshots sent to websocket clients (first, resync after lag, filter change).",
		}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_topomap_slow_clients_total", Help: "Times a client's send buffer filled up and it was resynced with a snapshot.",
		}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_topomap_clients", Help: "Connected websocket clients.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_topomap_rejected_total", Help: "Clients refused or closed, by reason (auth, origin, message, stalled: stopped reading).",
		}, []string{"reason"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_topomap_resumes_total", Help: "Reconnecting clients, by how they caught up (deltas, snapshot).",
		}, []string{"result"}),
		rebuilds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meridian_topomap_rebuild_seconds", Help: "Time to rebuild the graph at a past instant from the history store.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		historyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_topomap_history_errors_total", Help: "History queries that failed, or stored rows that could not be read back, by record kind.",
		}, []string{"kind"}),
	}
	nodes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meridian_topomap_nodes", Help: "Nodes in the live graph.",
	}, func() float64 { n, _ := m.graph.counts(); return float64(n) })
	edges := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meridian_topomap_edges", Help: "Edges in the live graph.",
	}, func() float64 { _, e := m.graph.counts(); return float64(e) })
	unmapped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "meridian_topomap_unmapped_records_total", Help: "Records naming something outside the inventory (drawn as unknown elements, or skipped when they name no target).",
	}, func() float64 { return float64(m.graph.unmappedTotal()) })
	if reg != nil {
		for _, c := range []prometheus.Collector{mt.records, mt.deltas, mt.deltaBytes, mt.delay, mt.sentBytes,
			mt.snapshots, mt.slow, mt.clients, mt.rejected, mt.resumes, mt.rebuilds, mt.historyErrors, nodes, edges, unmapped} {
			if err := reg.Register(c); err != nil {
				return nil, errors.Join(errors.New("topomap metrics"), err)
			}
		}
	}
	return mt, nil
}
