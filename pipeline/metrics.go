package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	accepted         *prometheus.CounterVec
	dropped          *prometheus.CounterVec
	batchRows        *prometheus.HistogramVec
	blocksInserted   *prometheus.CounterVec
	blocksFailed     *prometheus.CounterVec
	blocksRetried    *prometheus.CounterVec
	blocksRejected   *prometheus.CounterVec
	rowsInserted     *prometheus.CounterVec
	insertDuration   *prometheus.HistogramVec
	spoolBytes       prometheus.Gauge
	spoolBlocks      prometheus.Gauge
	spoolMaxBytes    prometheus.Gauge
	spoolCorrupt     prometheus.Counter
	spoolWriteErrors prometheus.Counter
	backpressure     prometheus.Gauge
	backpressureSec  prometheus.Counter
	consumerDropped  *prometheus.CounterVec
	consumerSent     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	kind := []string{"kind"}
	return &metrics{
		accepted: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_pipeline_records_accepted_total",
			Help: "Records accepted by Append, per record kind."}, kind),
		dropped: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_pipeline_records_dropped_total",
			Help: "Accepted records that will never be stored, per kind and reason (encode: the Encoder refused the record; rejected: the Inserter refused its block for good)."}, []string{"kind", "reason"}),
		batchRows: f.NewHistogramVec(prometheus.HistogramOpts{Name: "meridian_pipeline_batch_rows",
			Help: "Rows per sealed block.", Buckets: prometheus.ExponentialBuckets(1, 4, 10)}, kind),
		blocksInserted: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_pipeline_blocks_inserted_total",
			Help: "Blocks stored by the Inserter."}, kind),
		blocksFailed: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_pipeline_blocks_failed_total",
			Help: "Failed insert attempts (each is retried unless the error is permanent)."}, kind),
		blocksRetried: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_pipeline_blocks_retried_total",
			Help: "Insert attempts that repeat an earlier failed attempt of the same block."}, kind),
		blocksRejected: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_pipeline_blocks_rejected_total",
			Help: "Blocks the Inserter refused with a permanent error, moved to the spool's rejected/ folder."}, kind),
		rowsInserted: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_pipeline_rows_inserted_total",
			Help: "Rows in blocks stored by the Inserter."}, kind),
		insertDuration: f.NewHistogramVec(prometheus.HistogramOpts{Name: "meridian_pipeline_insert_duration_seconds",
			Help: "Duration of insert attempts, failed ones included.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, kind),
		spoolBytes: f.NewGauge(prometheus.GaugeOpts{Name: "meridian_pipeline_spool_bytes",
			Help: "Bytes of blocks in the spool, waiting to be stored."}),
		spoolBlocks: f.NewGauge(prometheus.GaugeOpts{Name: "meridian_pipeline_spool_blocks",
			Help: "Blocks in the spool, waiting to be stored."}),
		spoolMaxBytes: f.NewGauge(prometheus.GaugeOpts{Name: "meridian_pipeline_spool_max_bytes",
			Help: "Spool size limit; at this size Append blocks."}),
		spoolCorrupt: f.NewCounter(prometheus.CounterOpts{Name: "meridian_pipeline_spool_corrupt_files_total",
			Help: "Torn or damaged spool files found at start and moved to the spool's corrupt/ folder."}),
		spoolWriteErrors: f.NewCounter(prometheus.CounterOpts{Name: "meridian_pipeline_spool_write_errors_total",
			Help: "Blocks that could not be written to the spool and are held in memory only."}),
		backpressure: f.NewGauge(prometheus.GaugeOpts{Name: "meridian_pipeline_backpressure",
			Help: "1 from the moment sealed blocks wait for room in a full spool until the spool is back under half its bound."}),
		backpressureSec: f.NewCounter(prometheus.CounterOpts{Name: "meridian_pipeline_backpressure_seconds_total",
			Help: "Time Append callers spent blocked because the pipeline was full, summed over callers."}),
		consumerDropped: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_pipeline_consumer_dropped_records_total",
			Help: "Records not delivered to a consumer because its queue was full."}, []string{"consumer"}),
		consumerSent: f.NewCounterVec(prometheus.CounterOpts{Name: "meridian_pipeline_consumer_delivered_records_total",
			Help: "Records delivered to a consumer."}, []string{"consumer"}),
	}
}
