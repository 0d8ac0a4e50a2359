package ruler

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/grafana/regexp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/route"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/tsdb"
	apiv1 "github.com/prometheus/prometheus/web/api/v1"

	"github.com/meridianhq/meridian/internal/build"
)

// APIPrefix is where the lead mounts Handler: Grafana's Prometheus datasource URL is
// then http://meridian:PORT/prometheus.
const APIPrefix = "/prometheus"

// Handler serves Prometheus's HTTP API (/api/v1/query, query_range, series, labels,
// label/<name>/values, rules, alerts, metadata, status/buildinfo, …) over the ruler's
// TSDB with Prometheus's own promql engine: it is web/api/v1 itself, so the answers are
// Prometheus's. Paths are relative to APIPrefix: mount it with
// mux.Handle(APIPrefix+"/", http.StripPrefix(APIPrefix, r.Handler())).
// It answers 503 while the service is not running.
func (r *Ruler) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// State is read under the service's lock, so once it says Running the API built
		// in starting is visible here.
		if r.State() != services.Running {
			http.Error(w, "ruler is not running", http.StatusServiceUnavailable)
			return
		}
		r.api.ServeHTTP(w, req)
	})
}

// newAPI builds the API with a real or no-op getter for everything it calls: a nil one
// would be dereferenced by its route.
func (r *Ruler) newAPI() http.Handler {
	ext, _ := url.Parse(r.cfg.ExternalURL)
	start := time.Now()
	gatherer, _ := r.reg.(prometheus.Gatherer)
	if gatherer == nil {
		gatherer = prometheus.NewRegistry()
	}
	api := apiv1.NewAPI(r.engine, r.db, nil, nil, r.db,
		func(context.Context) apiv1.ScrapePoolsRetriever { return noTargets{} },
		func(context.Context) apiv1.TargetRetriever { return noTargets{} },
		func(context.Context) apiv1.AlertmanagerRetriever { return r.notifier },
		func() config.Config {
			r.mu.Lock()
			defer r.mu.Unlock()
			return *r.amConfig
		},
		map[string]string{},
		apiv1.GlobalURLOptions{Host: ext.Host, Scheme: ext.Scheme},
		func(f http.HandlerFunc) http.HandlerFunc { return f },
		tsdbStats{r.db},
		r.cfg.DataDir+"/tsdb",
		false, // no admin API: the TSDB is Meridian's
		false, 0,
		r.logger.With("component", "api"),
		func(context.Context) apiv1.RulesRetriever { return r.manager },
		// Remote read holds its samples in memory like a query (0 would be no limit).
		r.cfg.QueryMaxSamples, 1, 1<<20,
		false, sameOriginOnly,
		func() (apiv1.RuntimeInfo, error) {
			cwd, _ := os.Getwd()
			host, _ := os.Hostname()
			return apiv1.RuntimeInfo{StartTime: start, CWD: cwd, Hostname: host, ServerTime: time.Now(),
				ReloadConfigSuccess: true, LastConfigTime: r.lastConfigTime(), GoroutineCount: runtime.NumGoroutine(),
				GOMAXPROCS: runtime.GOMAXPROCS(0), StorageRetention: r.cfg.Retention.String()}, nil
		},
		// Grafana reads the version to pick query features: claim the Prometheus
		// release whose API this is.
		&apiv1.PrometheusVersion{Version: "3.9.0", Revision: build.Version, Branch: "meridian", GoVersion: runtime.Version()},
		r.notifs.Get, r.notifs.Sub,
		gatherer, r.reg,
		nil,
		false, nil,
		false, false, false,
		false,
		5*time.Minute,
		false, false,
		nil,
		nil,
		apiv1.OpenAPIOptions{ExternalURL: r.cfg.ExternalURL},
		r.parser,
	)
	router := route.New()
	api.Register(router.WithPrefix("/api/v1").WithInstrumentation(func(name string, h http.HandlerFunc) http.HandlerFunc {
		requests := r.apiRequests.WithLabelValues(name) // every route is listed from the start
		return func(w http.ResponseWriter, req *http.Request) {
			requests.Inc()
			h(w, req)
		}
	}))
	return router
}

// sameOriginOnly matches no Origin (a request carries a non-empty one), so the API
// allows no cross-origin reads: the map and Grafana's server-side proxy are same-origin.
// A nil pattern would be dereferenced by every request that carries an Origin header.
var sameOriginOnly = regexp.MustCompile("^$")

// noTargets: the ruler scrapes nothing; its SLI series come from the pipeline.
type noTargets struct{}

func (noTargets) ScrapePools() []string                       { return nil }
func (noTargets) TargetsActive() map[string][]*scrape.Target  { return map[string][]*scrape.Target{} }
func (noTargets) TargetsDropped() map[string][]*scrape.Target { return map[string][]*scrape.Target{} }
func (noTargets) TargetsDroppedCounts() map[string]int        { return map[string]int{} }
func (noTargets) ScrapePoolConfig(pool string) (*config.ScrapeConfig, error) {
	return nil, fmt.Errorf("no scrape pool %q: Meridian's ruler scrapes nothing", pool)
}

// tsdbStats adapts *tsdb.DB to the API's status endpoints.
type tsdbStats struct{ *tsdb.DB }

func (s tsdbStats) Stats(statsByLabelName string, limit int) (*tsdb.Stats, error) {
	return s.Head().Stats(statsByLabelName, limit), nil
}
func (tsdbStats) WALReplayStatus() (tsdb.WALReplayStatus, error) { return tsdb.WALReplayStatus{}, nil }
func (s tsdbStats) BlockMetas() ([]tsdb.BlockMeta, error)        { return s.DB.BlockMetas(), nil }
