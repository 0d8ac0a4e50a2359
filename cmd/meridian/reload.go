package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/alerts/ruler"
	"github.com/meridianhq/meridian/internal/configfile"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/steering"
)

// reloader applies a changed configuration to the running modules. The file given by
// -config.file, and the SLO spec, window and rule files it names, are checked every
// -config.reload-interval; SIGHUP and POST /-/reload reload at once. log_level,
// steering.overrides, the ruler's reloadable fields (ruler.Reloadable) and the inventory
// (through the live inventory, which the collectors, the map, the SLIs and steering,
// its GeoDNS zone, client regions and RFC 2136 names included, follow) take effect
// without a restart; any other change is logged and waits for one. A configuration that
// fails to parse or validate changes nothing: the process keeps the one it runs.
type reloader struct {
	a     *app
	parse func() (*Config, error) // the file and the command line, read again
	level *slog.LevelVar

	mu      sync.Mutex
	running Config                       // the configuration in effect
	sums    map[string][sha256.Size]byte // the watched files' contents at the last reload

	ok, okTime, restart prometheus.Gauge
	reloads             *prometheus.CounterVec
}

// newReloader is made before the modules start, so that running is the configuration as
// parsed, before any module fills in a default.
func newReloader(a *app, parse func() (*Config, error), level *slog.LevelVar) *reloader {
	r := &reloader{
		a: a, parse: parse, level: level, running: *a.cfg,
		ok: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_config_last_reload_successful",
			Help: "1 when the last configuration reload was applied, 0 when it failed."}),
		okTime: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_config_last_reload_success_timestamp_seconds",
			Help: "Time of the last configuration applied (at start or by a reload)."}),
		restart: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_config_restart_required",
			Help: "1 when the configuration has changes that take effect only after a restart."}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_config_reloads_total",
			Help: "Configuration reloads, by result (success, failure)."}, []string{"result"}),
	}
	a.reg.MustRegister(r.ok, r.okTime, r.restart, r.reloads)
	r.ok.Set(1)
	r.okTime.SetToCurrentTime()
	r.sums = sums(watchedFiles(&r.running))
	return r
}

// run reloads on SIGHUP and when a watched file changes, until ctx ends.
func (r *reloader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if d := r.running.ReloadInterval; d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = r.reload("SIGHUP")
		case <-tick:
			r.mu.Lock()
			changed := r.changed()
			r.mu.Unlock()
			if changed {
				_ = r.reload("file change")
			}
		}
	}
}

// ServeHTTP is POST /-/reload, as Prometheus and Alertmanager have it.
func (r *reloader) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST to reload the configuration", http.StatusMethodNotAllowed)
		return
	}
	if err := r.reload("HTTP"); err != nil {
		http.Error(w, "configuration reload failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "configuration reloaded")
}

// reload reads the configuration again and applies it.
func (r *reloader) reload(trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Hashed before reading, so that a file changed while this reload reads it is
	// reloaded again at the next check.
	read := sums(slices.Collect(maps.Keys(r.sums)))
	cfg, err := r.parse()
	if err == nil {
		err = r.apply(cfg)
	}
	// Remember what was read even when it failed, so that a broken file is reported
	// once, not at every check, and is read again when it changes.
	watched := cfg
	if watched == nil {
		watched = &r.running
	}
	r.sums = map[string][sha256.Size]byte{}
	for f, sum := range sums(watchedFiles(watched)) {
		if before, ok := read[f]; ok {
			sum = before
		}
		r.sums[f] = sum
	}
	if err != nil {
		r.a.log.Error("configuration reload failed; the running configuration is unchanged", "trigger", trigger, "err", err)
		r.ok.Set(0)
		r.reloads.WithLabelValues("failure").Inc()
		return err
	}
	// The restart gauge is set before the outcome is counted: whoever sees this reload
	// succeed also sees whether it needs a restart.
	pending := r.pendingRestart(cfg)
	if len(pending) > 0 {
		r.restart.Set(1)
		r.a.log.Warn("configuration changes that take effect after a restart", "fields", pending)
	} else {
		r.restart.Set(0)
	}
	r.a.log.Info("configuration reloaded", "trigger", trigger)
	r.ok.Set(1)
	r.okTime.SetToCurrentTime()
	r.reloads.WithLabelValues("success").Inc()
	return nil
}

// apply hands cfg's reloadable parts to the running modules: all of them or, on error,
// none.
func (r *reloader) apply(cfg *Config) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil { // validated already
		return fmt.Errorf("log_level: %w", err)
	}
	st, rl := r.a.steering, r.a.ruler
	if st != nil {
		if err := st.ApplyOverrides(cfg.Steering.Overrides); err != nil {
			return err
		}
	}
	if rl != nil {
		if err := rl.ApplyConfig(cfg.Ruler); err != nil {
			if st != nil { // the overrides in effect were valid, so they apply again
				err = errors.Join(err, st.ApplyOverrides(r.running.Steering.Overrides))
			}
			return err
		}
	}
	if r.a.inv != nil {
		if err := r.a.inv.Set(inventory.SourceYAML, cfg.Inventory); err != nil {
			return err
		}
	}
	r.level.Set(level)
	r.running.LogLevel = cfg.LogLevel
	r.running.Steering.Overrides = cfg.Steering.Overrides
	configfile.Copy(&r.running.Ruler, cfg.Ruler, ruler.Reloadable...)
	return nil
}

// pendingRestart lists the fields of cfg that differ from the configuration in effect.
func (r *reloader) pendingRestart(cfg *Config) []string {
	out := configfile.Changed("", r.running, *cfg, "log_level", "steering", "ruler", "inventory")
	if r.a.inv == nil && !reflect.DeepEqual(r.running.Inventory, cfg.Inventory) {
		out = append(out, "inventory") // no module follows a live inventory in this process
	}
	out = append(out, configfile.Changed("steering.", r.running.Steering, cfg.Steering, steering.Reloadable...)...)
	return append(out, configfile.Changed("ruler.", r.running.Ruler, cfg.Ruler, ruler.Reloadable...)...)
}

// changed reports whether a file read at the last reload has changed since.
func (r *reloader) changed() bool {
	return !maps.Equal(r.sums, sums(slices.Collect(maps.Keys(r.sums))))
}

// watchedFiles are the configuration file and the rule sources it names.
func watchedFiles(cfg *Config) []string {
	return slices.Concat([]string{cfg.File}, cfg.Ruler.SpecFiles, cfg.Ruler.WindowFiles, cfg.Ruler.RuleFiles)
}

// sums hashes each file's content; one that cannot be read hashes as empty, so that its
// return is a change too.
func sums(files []string) map[string][sha256.Size]byte {
	out := make(map[string][sha256.Size]byte, len(files))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		out[f] = sha256.Sum256(data)
	}
	return out
}
