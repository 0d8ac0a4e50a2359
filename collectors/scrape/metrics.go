package scrape

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the per-source metrics of one collector, named meridian_<collector>_….
type Metrics struct {
	Scrapes     *prometheus.CounterVec
	Errors      *prometheus.CounterVec
	ParseErrors *prometheus.CounterVec
	LastSuccess *prometheus.GaugeVec
	Duration    *prometheus.HistogramVec
}

// NewMetrics registers the metrics of collector (e.g. "wireguard") with reg.
func NewMetrics(reg prometheus.Registerer, collector string) *Metrics {
	f := promauto.With(reg)
	ns := "meridian_" + collector + "_"
	return &Metrics{
		Scrapes: f.NewCounterVec(prometheus.CounterOpts{
			Name: ns + "scrapes_total",
			Help: "Scrapes attempted, by source.",
		}, []string{"source"}),
		Errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: ns + "scrape_errors_total",
			Help: "Scrapes that failed as a whole, by source and reason (timeout, http_<code>, error).",
		}, []string{"source", "reason"}),
		ParseErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: ns + "parse_errors_total",
			Help: "Malformed lines or documents skipped while parsing, by source.",
		}, []string{"source"}),
		LastSuccess: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: ns + "last_success_timestamp_seconds",
			Help: "Unix time of the last scrape that succeeded, by source.",
		}, []string{"source"}),
		Duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    ns + "scrape_duration_seconds",
			Help:    "Time to fetch and parse one source.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"source"}),
	}
}

// Observe records one scrape of source that started at start and ended with err
// (nil: success) after parseErrs bad lines.
func (m *Metrics) Observe(source string, start time.Time, parseErrs int, err error) {
	m.Scrapes.WithLabelValues(source).Inc()
	m.Duration.WithLabelValues(source).Observe(time.Since(start).Seconds())
	if parseErrs > 0 {
		m.ParseErrors.WithLabelValues(source).Add(float64(parseErrs))
	}
	if err != nil {
		m.Errors.WithLabelValues(source, Reason(err)).Inc()
		return
	}
	m.LastSuccess.WithLabelValues(source).Set(float64(time.Now().UnixNano()) / 1e9)
}

// Reason classifies a scrape error for the errors metric.
func Reason(err error) string {
	var se *StatusError
	var te interface{ Timeout() bool }
	switch {
	case errors.As(err, &se):
		return "http_" + strconv.Itoa(se.Status)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &te) && te.Timeout():
		return "timeout"
	default:
		return "error"
	}
}
