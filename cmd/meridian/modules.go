package main

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/go-kit/log"
	"github.com/grafana/dskit/modules"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meridianhq/meridian/server"
)

// Module names; a target is any of them.
const (
	All    = "all"
	Server = "server"
)

// targets lists what -target accepts.
var targets = []string{All, Server}

func isTarget(t string) bool { return slices.Contains(targets, t) }

// app holds the wired components; the init functions fill it in dependency order.
type app struct {
	cfg *Config
	log *slog.Logger
	reg *prometheus.Registry

	server *server.Server
}

func newApp(cfg *Config, logger *slog.Logger) *app {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &app{cfg: cfg, log: logger, reg: reg}
}

// modules registers every module and its dependencies.
func (a *app) modules() (*modules.Manager, error) {
	m := modules.NewManager(goKitLogger{a.log})
	m.RegisterModule(Server, a.initServer)
	m.RegisterModule(All, nil)
	deps := map[string][]string{
		All: {Server},
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
