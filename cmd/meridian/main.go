// Command meridian runs Meridian: one binary whose modules (dskit) are chosen with -target.
// This file only wires; the logic lives in the component packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/grafana/dskit/services"

	"github.com/meridianhq/meridian/alerts/slo"
	"github.com/meridianhq/meridian/internal/build"
	"github.com/meridianhq/meridian/internal/configfile"
	"github.com/meridianhq/meridian/internal/tracing"
	"github.com/meridianhq/meridian/server"
	"github.com/meridianhq/meridian/steering"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			v, rev, gov := build.Info()
			fmt.Fprintf(stdout, "meridian %s (revision %s, %s)\n", v, rev, gov)
			return 0
		case "lab":
			return labCommand(args[1:], stdout, stderr)
		case "config":
			return configCommand(args[1:], stdout, stderr)
		case "steering":
			if len(args) < 2 || args[1] != "replay" {
				fmt.Fprintf(stderr, steering.ReplayUsage, server.TokenEnv)
				return 2
			}
			if err := steering.ReplayCmd(context.Background(), args[2:], server.TokenEnv, stdout, stderr); err != nil {
				if errors.Is(err, flag.ErrHelp) {
					return 0
				}
				fmt.Fprintln(stderr, "meridian steering replay:", err)
				return 2
			}
			return 0
		case "slo":
			if len(args) < 2 || args[1] != "generate" {
				fmt.Fprintln(stderr, "usage: meridian slo generate [-out alerts/rules] [-windows FILE]... [-extra-label k=v]... SPEC...")
				return 2
			}
			if err := slo.GenerateCmd(args[2:], stdout); err != nil {
				fmt.Fprintln(stderr, "meridian slo generate:", err)
				return 2
			}
			return 0
		}
	}
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		for _, e := range configfile.Split(err) {
			fmt.Fprintln(stderr, "meridian:", e)
		}
		return 2
	}
	level := new(slog.LevelVar)
	logger := newLogger(cfg, stderr, level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reparse := func() (*Config, error) { return parseConfig(args, io.Discard) }
	if err := serve(ctx, cfg, logger, func(a *app) *reloader { return newReloader(a, reparse, level) }); err != nil {
		// The text, not the value: slog formats an error value with %+v, which prints the
		// stack trace that dskit's module manager wraps its errors with.
		logger.Error("meridian stopped with an error", "err", err.Error())
		return 1
	}
	return 0
}

// serve starts the chosen modules and blocks until ctx ends or one of them fails.
// reload, when not nil, makes the reloader of the configuration.
func serve(ctx context.Context, cfg *Config, logger *slog.Logger, reload func(*app) *reloader) error {
	v, _, _ := build.Info()
	shutdownTracing, err := tracing.Setup(ctx, cfg.Tracing, v)
	if err != nil {
		return err
	}
	defer shutdownTracing(context.Background())

	a := newApp(cfg, logger)
	if reload != nil && cfg.File != "" {
		a.reloader = reload(a)
	}
	return serveApp(ctx, a)
}

// serveApp runs a's modules until ctx ends or one of them fails.
func serveApp(ctx context.Context, a *app) error {
	cfg, logger := a.cfg, a.log
	v, _, _ := build.Info()
	mm, err := a.modules()
	if err != nil {
		return err
	}
	svcMap, err := mm.InitModuleServices(cfg.Target...)
	if err != nil {
		return err
	}
	svcs := make([]services.Service, 0, len(svcMap))
	for _, s := range svcMap {
		svcs = append(svcs, s)
	}
	sm, err := services.NewManager(svcs...)
	if err != nil {
		return err
	}
	if a.server != nil {
		a.server.AddReadyCheck("modules", func() error {
			if !sm.IsHealthy() {
				return errors.New("not every module is running yet")
			}
			return nil
		})
	}
	failed := make(chan error, 1)
	sm.AddListener(services.NewManagerListener(nil, nil, func(s services.Service) {
		select {
		case failed <- s.FailureCase():
		default:
		}
	}))
	if err := sm.StartAsync(context.Background()); err != nil {
		return err
	}
	if err := sm.AwaitHealthy(ctx); err != nil {
		sm.StopAsync()
		_ = sm.AwaitStopped(context.Background())
		return fmt.Errorf("starting: %w", err)
	}
	logger.Info("meridian running", "version", v, "targets", cfg.Target.String())
	stopReloads := func() {}
	if r := a.reloader; r == nil {
		a.server.Handle("/-/reload", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no configuration file to reload: meridian runs without -config.file", http.StatusNotFound)
		}))
	} else {
		a.server.Handle("/-/reload", r)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.run(rctx) }()
		stopReloads = func() { cancel(); <-done }
	}
	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("stopping")
	case runErr = <-failed:
	}
	stopReloads() // no reload reaches a stopping module
	sm.StopAsync()
	if err := sm.AwaitStopped(context.Background()); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// newLogger logs at cfg's level into level, which a reload may change.
func newLogger(cfg *Config, w io.Writer, level *slog.LevelVar) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	level.Set(lvl)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
