package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/grafana/dskit/modules"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/alerts/ruler"
	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/collectors/ceph"
	"github.com/meridianhq/meridian/collectors/geodns"
	"github.com/meridianhq/meridian/collectors/hubble"
	"github.com/meridianhq/meridian/collectors/shard"
	"github.com/meridianhq/meridian/collectors/wireguard"
	"github.com/meridianhq/meridian/dashboards/chhttp"
	"github.com/meridianhq/meridian/internal/kitlog"
	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/server"
	"github.com/meridianhq/meridian/steering"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/topomap"
)

// Module names; a target is any of them.
const (
	All            = "all"
	Server         = "server"
	Storage        = "storage"
	Pipeline       = "pipeline"
	Collector      = "collector"      // every collector below
	CollectorRing  = "collector-ring" // shards the collectors' targets over replicas; a dependency, not a target
	WireGuard      = "wireguard"
	Ceph           = "ceph"
	Hubble         = "hubble"
	Probes         = "geodns-probes"
	Ruler          = "ruler"
	Steering       = "steering"
	Topomap        = "topomap"
	ClickHouseHTTP = "clickhouse-http"
)

// targets lists what -target accepts.
var targets = []string{All, Server, Storage, Pipeline, Collector, WireGuard, Ceph, Hubble, Probes, Ruler, Steering, Topomap, ClickHouseHTTP}

// Names of the pipeline's live consumers.
const (
	consumeMap      = "topomap"
	consumeSLI      = "sli"
	consumeSteering = "steering"
)

func isTarget(t string) bool { return slices.Contains(targets, t) }

// app holds the wired components; the init functions fill it in dependency order.
type app struct {
	cfg *Config
	log *slog.Logger
	reg *prometheus.Registry

	server   *server.Server
	store    *storage.Store
	pipeline *pipeline.Pipeline
	ruler    *ruler.Ruler
	steering *steering.Steering
	ring     *shard.Ring                    // nil unless collector_ring.enabled
	ceph     atomic.Pointer[ceph.Collector] // set by initCeph; its raw series go to the ruler's store
	reloader *reloader                      // nil: the configuration is not reloaded

	// consumers are the live consumers of records, filled in by their modules. The
	// pipeline is built first with one late-bound queue per entry, so a consumer module
	// may itself depend on the pipeline (steering appends its decisions to it).
	consumers map[string]pipeline.Consumer
}

func newApp(cfg *Config, logger *slog.Logger) *app {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &app{cfg: cfg, log: logger, reg: reg, consumers: map[string]pipeline.Consumer{}}
}

// modules registers every module and its dependencies.
func (a *app) modules() (*modules.Manager, error) {
	m := modules.NewManager(kitlog.New(a.log))
	m.RegisterModule(Server, a.initServer)
	m.RegisterModule(Storage, a.initStorage)
	m.RegisterModule(Pipeline, a.initPipeline)
	m.RegisterModule(CollectorRing, a.initCollectorRing)
	m.RegisterModule(WireGuard, a.initWireGuard)
	m.RegisterModule(Ceph, a.initCeph)
	m.RegisterModule(Hubble, a.initHubble)
	m.RegisterModule(Probes, a.initProbes)
	m.RegisterModule(Ruler, a.initRuler)
	m.RegisterModule(Steering, a.initSteering)
	m.RegisterModule(Topomap, a.initTopomap)
	m.RegisterModule(ClickHouseHTTP, a.initClickHouseHTTP)
	m.RegisterModule(Collector, nil)
	m.RegisterModule(All, nil)
	deps := map[string][]string{
		Storage:        {Server},
		Pipeline:       {Storage},
		CollectorRing:  {Server},
		WireGuard:      {Pipeline, CollectorRing},
		Ceph:           {Pipeline},
		Hubble:         {Pipeline, CollectorRing},
		Probes:         {Pipeline},
		Collector:      {WireGuard, Ceph, Hubble, Probes},
		Ruler:          {Pipeline},
		Steering:       {Pipeline, Ruler},
		Topomap:        {Pipeline},
		ClickHouseHTTP: {Storage},
		All:            {Collector, Ruler, Steering, Topomap, ClickHouseHTTP},
	}
	for mod, d := range deps {
		if err := m.AddDependency(mod, d...); err != nil {
			return nil, fmt.Errorf("module %s: %w", mod, err)
		}
	}
	return m, nil
}

func (a *app) initServer() (services.Service, error) {
	s, err := server.New(a.cfg.Server, server.Deps{Registry: a.reg, Logger: a.logger("server")})
	if err != nil {
		return nil, err
	}
	a.server = s
	s.Handle("GET /config", http.HandlerFunc(a.serveConfig))
	return s, nil
}

// initStorage opens ClickHouse (embedded unless a DSN is set); its service applies the
// migrations at start, retrying while a server is unreachable.
func (a *app) initStorage() (services.Service, error) {
	st, err := storage.New(a.cfg.Storage, a.logger("storage"), a.reg)
	if err != nil {
		return nil, err
	}
	a.store = st
	svc := st.Service()
	a.server.AddReadyCheck("storage", func() error {
		if svc.State() != services.Running {
			return errors.New("migrations not applied yet")
		}
		return nil
	})
	return svc, nil
}

// initPipeline batches records into storage and fans them out to the live consumers.
func (a *app) initPipeline() (services.Service, error) {
	consumers := map[string]pipeline.Consumer{}
	for _, name := range []string{consumeMap, consumeSLI, consumeSteering} {
		consumers[name] = pipeline.ConsumerFunc(func(recs []pipeline.Record) {
			if c := a.consumers[name]; c != nil {
				c.Consume(recs)
			}
		})
	}
	p, err := pipeline.New(a.cfg.Pipeline, storage.NewEncoder(), a.store, consumers, a.reg, a.log.With("component", "pipeline"))
	if err != nil {
		return nil, err
	}
	a.pipeline = p
	// Not ready while records cannot be kept: the spool cannot write, or inserts keep failing.
	a.server.AddReadyCheck("pipeline", p.Health)
	return p, nil
}

func (a *app) logger(component string) *slog.Logger { return a.log.With("component", component) }

// initCollectorRing joins the collector ring when it is enabled; its status page lists
// the replicas.
func (a *app) initCollectorRing() (services.Service, error) {
	if !a.cfg.CollectorRing.Enabled {
		return nil, nil
	}
	r, err := shard.New(a.cfg.CollectorRing, shard.Deps{Logger: a.logger("collector-ring"), Registerer: a.reg})
	if err != nil {
		return nil, err
	}
	a.ring = r
	a.server.Handle("/collector/ring", r)
	return r, nil
}

// owner is what shards the collectors' targets: the ring, or nil (every target here).
func (a *app) owner() shard.Owner {
	if a.ring == nil {
		return nil // not a nil *shard.Ring inside a non-nil interface
	}
	return a.ring
}

func (a *app) initWireGuard() (services.Service, error) {
	return wireguard.New(a.cfg.WireGuard, a.logger("wireguard"), a.reg, a.pipeline, &a.cfg.Inventory, a.owner())
}

func (a *app) initCeph() (services.Service, error) {
	c, err := ceph.New(a.cfg.Ceph, a.logger("ceph"), a.reg, a.pipeline, &a.cfg.Inventory)
	if err != nil {
		return nil, err
	}
	a.ceph.Store(c)
	return c, nil
}

func (a *app) initHubble() (services.Service, error) {
	return hubble.NewCollector(a.cfg.Hubble, a.pipeline, &a.cfg.Inventory, a.logger("hubble"), a.reg, a.owner())
}

func (a *app) initProbes() (services.Service, error) {
	return geodns.New(a.cfg.Probes, &a.cfg.Inventory, a.pipeline, a.logger("geodns"), a.reg)
}

// initRuler evaluates the SLO rules over the SLI series the pipeline feeds it, and serves
// the Prometheus query API under /prometheus for Grafana.
func (a *app) initRuler() (services.Service, error) {
	s := sli.New(&a.cfg.Inventory)
	if err := a.reg.Register(s); err != nil { // on /metrics too, for an external Prometheus
		return nil, err
	}
	r, err := ruler.New(a.cfg.Ruler, ruler.Deps{SLI: s, Registerer: a.reg, Logger: a.logger("ruler")})
	if err != nil {
		return nil, err
	}
	// Meridian's own series for the dashboards and self-alerts, and the raw Ceph series
	// of this process's Ceph collector for operators' Rook rules.
	if err := r.Store(a.reg, a.cfg.Ruler.StoreSeries); err != nil {
		return nil, err
	}
	if err := r.Store(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		if c := a.ceph.Load(); c != nil {
			return c.RawSeries().Gather()
		}
		return nil, nil
	}), ""); err != nil {
		return nil, err
	}
	a.ruler = r
	a.consumers[consumeSLI] = s
	a.server.Handle(ruler.APIPrefix+"/", http.StripPrefix(ruler.APIPrefix, r.Handler()))
	return r, nil
}

func (a *app) initSteering() (services.Service, error) {
	st, err := steering.New(a.cfg.Steering, steering.Deps{
		Inventory: &a.cfg.Inventory, Appender: a.pipeline, Alerts: a.alerts(),
		History: steering.NewHistory(a.store, a.store.Database()), Logger: a.log, Registerer: a.reg,
	})
	if err != nil {
		return nil, err
	}
	a.steering = st
	a.consumers[consumeSteering] = st
	a.server.Handle("/api/steering/", st.Handler())
	return st, nil
}

func (a *app) initTopomap() (services.Service, error) {
	m, err := topomap.New(a.cfg.Topomap, topomap.Deps{
		Inventory: &a.cfg.Inventory, Alerts: a.alerts(), Weights: a.weights(), APIToken: a.server.Token(),
		Logger: a.logger("topomap"), Registerer: a.reg,
	})
	if err != nil {
		return nil, err
	}
	m.UseHistory(a.store) // time travel: past states rebuilt from ClickHouse
	a.consumers[consumeMap] = m
	// The map checks its own token: a browser's websocket cannot send an Authorization header.
	a.server.HandleOpen("/map", m.Handler())
	a.server.HandleOpen("/map/", m.Handler())
	// The websocket outlives the server's read and write timeouts; it keeps its own
	// ping/pong deadlines.
	a.server.HandleOpen("GET /map/ws", m.Handler(), server.Streaming())
	return m, nil
}

// initClickHouseHTTP serves the embedded engine to Grafana's ClickHouse plugin, when a
// password for it is configured.
func (a *app) initClickHouseHTTP() (services.Service, error) {
	if pw, err := secret.Read(a.cfg.ClickHouseHTTP.Password()); err != nil {
		return nil, err
	} else if pw.Empty() {
		a.log.Info("ClickHouse HTTP endpoint off: set " + chhttp.PasswordEnv + " or -clickhouse-http.password-file to serve Grafana")
		return nil, nil
	}
	h, err := chhttp.New(a.cfg.ClickHouseHTTP, chhttp.Deps{Querier: a.store, Logger: a.logger("clickhouse-http"), Registerer: a.reg})
	if err != nil {
		return nil, err
	}
	// A query may run its whole max_execution_time (and wait as long for a slot) whatever
	// -server.write-timeout is; the reply must still get out.
	a.server.HandleOpen("/clickhouse/", http.StripPrefix("/clickhouse", h), server.WriteTimeout(2*a.cfg.ClickHouseHTTP.MaxExecutionTime+10*time.Second))
	return nil, nil
}

// alerts is the ruler's firing alerts, or none when the ruler does not run here.
func (a *app) alerts() alerts.Source { return alertSource{a} }

type alertSource struct{ a *app }

func (s alertSource) Firing() []alerts.Alert {
	if s.a.ruler == nil {
		return nil
	}
	return s.a.ruler.Firing()
}

// weights is steering's current weights for the map, or none when steering does not run here.
func (a *app) weights() topomap.WeightSource {
	return topomap.WeightsFunc(func() []topomap.Weight {
		if a.steering == nil {
			return nil
		}
		ws := a.steering.Weights().Entries
		out := make([]topomap.Weight, len(ws))
		for i, w := range ws {
			out[i] = topomap.Weight{Service: w.Service, Region: w.Region, POP: w.POP, Weight: w.Weight, Cause: w.Cause, Reason: w.Reason, Since: w.Since}
		}
		return out
	})
}
