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
	"github.com/meridianhq/meridian/collectors/haproxy"
	"github.com/meridianhq/meridian/collectors/hubble"
	"github.com/meridianhq/meridian/collectors/keepalived"
	"github.com/meridianhq/meridian/collectors/shard"
	"github.com/meridianhq/meridian/collectors/wireguard"
	"github.com/meridianhq/meridian/dashboards/chhttp"
	"github.com/meridianhq/meridian/internal/kitlog"
	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/inventory"
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
	HAProxy        = "haproxy"
	Keepalived     = "keepalived"
	Ruler          = "ruler"
	Steering       = "steering"
	Topomap        = "topomap"
	ClickHouseHTTP = "clickhouse-http"
	Inventory      = "inventory" // the live inventory; a dependency, not a target
)

// targets lists what -target accepts.
var targets = []string{All, Server, Storage, Pipeline, Collector, WireGuard, Ceph, Hubble, Probes, HAProxy, Keepalived, Ruler, Steering, Topomap, ClickHouseHTTP}

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
	topomap  *topomap.Map
	inv      *inventory.Live
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
	m.RegisterModule(Inventory, a.initInventory)
	m.RegisterModule(Storage, a.initStorage)
	m.RegisterModule(Pipeline, a.initPipeline)
	m.RegisterModule(CollectorRing, a.initCollectorRing)
	m.RegisterModule(WireGuard, a.initWireGuard)
	m.RegisterModule(Ceph, a.initCeph)
	m.RegisterModule(Hubble, a.initHubble)
	m.RegisterModule(Probes, a.initProbes)
	m.RegisterModule(HAProxy, a.initHAProxy)
	m.RegisterModule(Keepalived, a.initKeepalived)
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
		WireGuard:      {Pipeline, CollectorRing, Inventory},
		Ceph:           {Pipeline, Inventory},
		Hubble:         {Pipeline, CollectorRing, Inventory},
		Probes:         {Pipeline, Inventory},
		HAProxy:        {Pipeline, CollectorRing, Inventory},
		Keepalived:     {Pipeline, Inventory},
		Collector:      {WireGuard, Ceph, Hubble, Probes, HAProxy, Keepalived},
		Ruler:          {Pipeline, Inventory},
		Steering:       {Pipeline, Ruler, Inventory},
		Topomap:        {Pipeline, Inventory},
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
	st, err := storage.New(a.cfg.Storage, storage.Deps{Logger: a.logger("storage"), Registerer: a.reg})
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
	p, err := pipeline.New(a.cfg.Pipeline, pipeline.Deps{Encoder: storage.NewEncoder(), Inserter: a.store, Consumers: consumers, Logger: a.log.With("component", "pipeline"), Registerer: a.reg})
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

// initInventory merges the file's inventory with the configured Kubernetes and Karmada
// APIs; the reloader hands it the file's section again when it changes.
func (a *app) initInventory() (services.Service, error) {
	l, err := inventory.New(a.cfg.InventorySources, inventory.Deps{Logger: a.logger("inventory"), Registerer: a.reg})
	if err != nil {
		return nil, err
	}
	if err := l.Set(inventory.SourceYAML, a.cfg.Inventory); err != nil {
		return nil, err
	}
	a.inv = l
	return l, nil
}

func (a *app) initWireGuard() (services.Service, error) {
	return wireguard.New(a.cfg.WireGuard, wireguard.Deps{Logger: a.logger("wireguard"), Registerer: a.reg, Appender: a.pipeline, Inventory: a.inv, Owner: a.owner()})
}

func (a *app) initCeph() (services.Service, error) {
	c, err := ceph.New(a.cfg.Ceph, ceph.Deps{Logger: a.logger("ceph"), Registerer: a.reg, Appender: a.pipeline, Inventory: a.inv})
	if err != nil {
		return nil, err
	}
	a.ceph.Store(c)
	return c, nil
}

func (a *app) initHubble() (services.Service, error) {
	return hubble.New(a.cfg.Hubble, hubble.Deps{Logger: a.logger("hubble"), Registerer: a.reg, Appender: a.pipeline, Inventory: a.inv, Owner: a.owner()})
}

func (a *app) initProbes() (services.Service, error) {
	return geodns.New(a.cfg.Probes, geodns.Deps{Logger: a.logger("geodns"), Registerer: a.reg, Appender: a.pipeline, Inventory: a.inv})
}

// initHAProxy reads the POPs' HAProxy front doors; off without targets.
func (a *app) initHAProxy() (services.Service, error) {
	if len(a.cfg.HAProxy.Targets) == 0 {
		return nil, nil
	}
	return haproxy.New(a.cfg.HAProxy, haproxy.Deps{Inventory: a.inv, Appender: a.pipeline, Logger: a.logger("haproxy"), Registerer: a.reg, Owner: a.owner()})
}

// initKeepalived follows the POPs' keepalived pairs; off without nodes.
func (a *app) initKeepalived() (services.Service, error) {
	if len(a.cfg.Keepalived.Nodes) == 0 {
		return nil, nil
	}
	return keepalived.New(a.cfg.Keepalived, keepalived.Deps{Inventory: a.inv, Appender: a.pipeline, Logger: a.logger("keepalived"), Registerer: a.reg})
}

// initRuler evaluates the SLO rules over the SLI series the pipeline feeds it, and serves
// the Prometheus query API under /prometheus for Grafana.
func (a *app) initRuler() (services.Service, error) {
	s := sli.New(sli.Deps{Inventory: a.inv})
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
	// Alert changes go to ClickHouse for the map's past states; notifications carry the
	// map's top cause.
	r.RecordAlerts(a.pipeline)
	r.Explain(causeSource{a})
	a.ruler = r
	a.consumers[consumeSLI] = s
	a.server.Handle(ruler.APIPrefix+"/", http.StripPrefix(ruler.APIPrefix, r.Handler()))
	return r, nil
}

func (a *app) initSteering() (services.Service, error) {
	st, err := steering.New(a.cfg.Steering, steering.Deps{
		Inventory: &a.cfg.Inventory, Live: a.inv, Appender: a.pipeline, Alerts: a.alerts(),
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
		Inventory: &a.cfg.Inventory, Live: a.inv, Alerts: a.alerts(), Weights: a.weights(), APIToken: a.server.Token(),
		Logger: a.logger("topomap"), Registerer: a.reg,
	})
	if err != nil {
		return nil, err
	}
	m.UseHistory(a.store) // time travel: past states rebuilt from ClickHouse
	a.topomap = m
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

// causeSource is the map's causes for the ruler's notifications, or none when the map
// does not run here.
type causeSource struct{ a *app }

func (s causeSource) Cause(labels map[string]string) string {
	if s.a.topomap == nil {
		return ""
	}
	return s.a.topomap.Cause(labels)
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
			out[i] = topomap.Weight{Service: w.Service, Region: w.Region, POP: w.POP, Weight: w.Weight, Cause: w.Cause, Reason: w.Reason, Since: w.Since, RegretMs: w.RegretMs}
		}
		return out
	})
}
