package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/go-kit/log"
	"github.com/grafana/dskit/modules"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/server"
	"github.com/meridianhq/meridian/storage"
)

// Module names; a target is any of them.
const (
	All      = "all"
	Server   = "server"
	Storage  = "storage"
	Pipeline = "pipeline"
)

// targets lists what -target accepts.
var targets = []string{All, Server, Storage, Pipeline}

func isTarget(t string) bool { return slices.Contains(targets, t) }

// app holds the wired components; the init functions fill it in dependency order.
type app struct {
	cfg *Config
	log *slog.Logger
	reg *prometheus.Registry

	server   *server.Server
	store    *storage.Store
	pipeline *pipeline.Pipeline

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
	m := modules.NewManager(goKitLogger{a.log})
	m.RegisterModule(Server, a.initServer)
	m.RegisterModule(Storage, a.initStorage)
	m.RegisterModule(Pipeline, a.initPipeline)
	m.RegisterModule(All, nil)
	deps := map[string][]string{
		Storage:  {Server},
		Pipeline: {Storage},
		All:      {Pipeline},
	}
	for mod, d := range deps {
		if err := m.AddDependency(mod, d...); err != nil {
			return nil, fmt.Errorf("module %s: %w", mod, err)
		}
	}
	return m, nil
}

func (a *app) initServer() (services.Service, error) {
	s, err := server.New(a.cfg.Server, a.reg, a.log.With("component", "server"))
	if err != nil {
		return nil, err
	}
	a.server = s
	return s, nil
}

// initStorage opens ClickHouse (embedded unless a DSN is set) and applies migrations.
func (a *app) initStorage() (services.Service, error) {
	var ready error = errors.New("migrations not applied yet")
	a.server.AddReadyCheck("storage", func() error { return ready })
	start := func(ctx context.Context) error {
		st, err := storage.New(a.cfg.Storage, a.log.With("component", "storage"), a.reg)
		if err != nil {
			return err
		}
		if err := st.Migrate(ctx); err != nil {
			st.Close()
			return err
		}
		a.store, ready = st, nil
		return nil
	}
	stop := func(error) error {
		if a.store == nil {
			return nil
		}
		return a.store.Close()
	}
	return services.NewIdleService(start, stop), nil
}

// initPipeline batches records into storage and fans them out to the live consumers.
func (a *app) initPipeline() (services.Service, error) {
	consumers := map[string]pipeline.Consumer{}
	for _, name := range a.liveConsumers() {
		consumers[name] = pipeline.ConsumerFunc(func(recs []pipeline.Record) {
			if c := a.consumers[name]; c != nil {
				c.Consume(recs)
			}
		})
	}
	p, err := pipeline.New(a.cfg.Pipeline, storage.NewEncoder(), storeInserter{a}, consumers, a.reg, a.log.With("component", "pipeline"))
	if err != nil {
		return nil, err
	}
	a.pipeline = p
	return p, nil
}

// liveConsumers names the consumer modules the chosen targets run.
func (a *app) liveConsumers() []string { return nil }

// storeInserter defers to the store opened when the storage module started.
type storeInserter struct{ a *app }

func (s storeInserter) Insert(ctx context.Context, b pipeline.Block) error {
	return s.a.store.Insert(ctx, b)
}

// goKitLogger lets dskit, which logs with go-kit, write through slog.
type goKitLogger struct{ l *slog.Logger }

var _ log.Logger = goKitLogger{}

func (g goKitLogger) Log(kv ...any) error {
	msg, level := "", slog.LevelInfo
	attrs := make([]any, 0, len(kv))
	for i := 0; i+1 < len(kv); i += 2 {
		k := fmt.Sprint(kv[i])
		switch k {
		case "msg":
			msg = fmt.Sprint(kv[i+1])
		case "level":
			if fmt.Sprint(kv[i+1]) == "debug" {
				level = slog.LevelDebug
			} else if v := fmt.Sprint(kv[i+1]); v == "warn" || v == "error" {
				level = slog.LevelWarn
			}
		default:
			attrs = append(attrs, k, kv[i+1])
		}
	}
	g.l.Log(nil, level, msg, attrs...)
	return nil
}
