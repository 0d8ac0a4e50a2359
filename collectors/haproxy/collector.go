// Package haproxy collects each POP's front door from HAProxy: its frontends, backends
// and servers, read from the built-in Prometheus exporter or, for builds without it, the
// stats socket, and turned into pipeline.HAProxyStat records mapped to POP and node.
package haproxy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/collectors/scrape"
	"github.com/meridianhq/meridian/collectors/shard"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Config lists the HAProxy processes to read.
type Config struct {
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	Targets  []Target      `yaml:"targets"`
}

// Target is one HAProxy process of a POP's front door.
type Target struct {
	POP  string `yaml:"pop"`
	Node string `yaml:"node"`
	// URL of the exporter (http://host:port/metrics); else Socket, the stats socket.
	URL    string `yaml:"url"`
	Socket string `yaml:"socket"`
	// Frontends carrying the POP's traffic, for utilisation; empty: every frontend.
	Frontends []string `yaml:"frontends"`
}

// Source names the target in metrics and errors.
func (t Target) Source() string {
	if t.URL != "" {
		return t.URL
	}
	return "unix:" + t.Socket
}

// RegisterFlags registers the flags, prefixed "haproxy.", and sets the defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.Interval, "haproxy.interval", 5*time.Second, "How often each HAProxy is read; rates are over this interval.")
	f.DurationVar(&c.Timeout, "haproxy.timeout", 3*time.Second, "Deadline for one read of one HAProxy.")
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if c.Interval <= 0 {
		return errors.New("haproxy.interval: must be positive")
	}
	if c.Timeout <= 0 || c.Timeout > c.Interval {
		return errors.New("haproxy.timeout: must be positive and at most haproxy.interval")
	}
	for i, t := range c.Targets {
		switch {
		case t.POP == "" || t.Node == "":
			return fmt.Errorf("haproxy.targets[%d]: pop and node are required", i)
		case (t.URL == "") == (t.Socket == ""):
			return fmt.Errorf("haproxy.targets[%d]: set exactly one of url and socket", i)
		case t.URL != "" && !strings.HasPrefix(t.URL, "http://") && !strings.HasPrefix(t.URL, "https://"):
			return fmt.Errorf("haproxy.targets[%d].url: %q is not an http(s) URL", i, t.URL)
		}
	}
	return nil
}

// Deps are what the collector is given.
type Deps struct {
	Inventory  inventory.View // the live inventory, read at each reading; nil: nothing is mapped
	Appender   pipeline.Appender
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Owner shards the targets over collector replicas (collectors/shard); nil: every
	// target is read here.
	Owner shard.Owner
}

// Collector reads every target each interval.
type Collector struct {
	services.Service

	cfg     Config
	d       Deps
	metrics *scrape.Metrics
	http    *http.Client
	prev    map[string]reading // per target source
}

type reading struct {
	at   time.Time
	snap Snapshot
}

// New returns the collector as a dskit timer service.
func New(cfg Config, d Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Inventory == nil {
		d.Inventory = inventory.Static(&inventory.Inventory{})
	}
	c := &Collector{cfg: cfg, d: d, metrics: scrape.NewMetrics(d.Registerer, "haproxy"), http: &http.Client{}, prev: map[string]reading{}}
	c.Service = services.NewTimerService(cfg.Interval, nil, c.iteration, nil)
	return c, nil
}

func (c *Collector) iteration(ctx context.Context) error {
	for _, t := range c.cfg.Targets {
		if c.d.Owner != nil && !c.d.Owner.Owns(t.Source()) {
			delete(c.prev, t.Source()) // back here later: no rate over the time another replica read it
			continue
		}
		snap, at, ok := c.read(ctx, t)
		if !ok {
			continue // counted and logged; the previous reading stays for the next good one
		}
		recs := Records(snap, c.prev[t.Source()], at, t, mapTarget(c.d.Inventory.Snapshot(), t))
		c.prev[t.Source()] = reading{at: at, snap: snap}
		if err := c.d.Appender.Append(ctx, recs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.d.Logger.Error("haproxy: appending records", "source", t.Source(), "err", err)
		}
	}
	return nil
}

func (c *Collector) read(ctx context.Context, t Target) (Snapshot, time.Time, bool) {
	src := t.Source()
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var (
		snap Snapshot
		bad  []error
		err  error
	)
	if t.URL != "" {
		var b []byte
		if b, err = scrape.Fetch(sctx, c.http, t.URL); err == nil {
			snap, bad = ParseExposition(src, b)
		}
	} else {
		var b []byte
		if b, err = command(sctx, t.Socket, "show stat"); err == nil {
			snap, bad = ParseStat(src, b)
		}
	}
	if err == nil && len(snap) == 0 {
		err = fmt.Errorf("%s: no frontend, backend or server in the answer", src)
	}
	for _, e := range bad {
		c.d.Logger.Warn("haproxy: skipped bad input", "source", src, "err", e)
	}
	c.metrics.Observe(src, start, len(bad), err)
	if err != nil {
		c.d.Logger.Error("haproxy: read failed; keeping the previous reading", "source", src, "reason", scrape.Reason(err), "err", err)
		return nil, time.Time{}, false
	}
	return snap, start, true
}

// command sends one command to a stats socket and returns the answer (the socket closes
// after answering one command in HAProxy's default, non-interactive mode).
func command(ctx context.Context, path, cmd string) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return nil, fmt.Errorf("unix:%s %s: %w", path, cmd, err)
	}
	b, err := io.ReadAll(io.LimitReader(conn, scrape.MaxBody))
	if err != nil {
		return nil, fmt.Errorf("unix:%s %s: %w", path, cmd, err)
	}
	return b, nil
}

// place is where a target's records go on the map.
type place struct {
	site, cluster string
	capacity      inventory.Capacity
}

// mapTarget maps a target to its POP's site and capacity and its node's cluster: the one
// place this collector reads the inventory.
func mapTarget(inv *inventory.Snapshot, t Target) place {
	var p place
	if pop, ok := inv.POP(t.POP); ok {
		p.site, p.capacity = pop.Site, pop.Capacity
	}
	if n, ok := inv.Node(t.Node); ok {
		p.cluster = n.Cluster
		if p.site == "" {
			p.site = n.Site
		}
	}
	return p
}

// Records turns a reading into records, with rates against the previous reading of the
// same target (none on the first: rates 0).
func Records(cur Snapshot, prev reading, at time.Time, t Target, p place) []pipeline.Record {
	dt := at.Sub(prev.at)
	counted := map[string]bool{}
	for _, f := range t.Frontends {
		counted[f] = true
	}
	recs := make([]pipeline.Record, 0, len(cur))
	for k, r := range cur {
		rec := &pipeline.HAProxyStat{
			M:   pipeline.Meta{Time: at, Collector: "haproxy/" + t.Node, Site: p.site, Cluster: p.cluster, Node: t.Node},
			POP: t.POP, Proxy: k.Proxy, Server: k.Server, Type: k.Type,
			Status: r.Status, CheckStatus: r.CheckStatus, Sessions: r.Sessions, SessionMax: r.SessionMax, Queue: r.Queue, ResponseMs: r.ResponseMs,
		}
		if old, ok := prev.snap[k]; ok {
			rec.SessionRate = scrape.Rate(old.SessionsTotal, r.SessionsTotal, dt)
			rec.BytesIn = scrape.Rate(old.BytesIn, r.BytesIn, dt)
			rec.BytesOut = scrape.Rate(old.BytesOut, r.BytesOut, dt)
			rec.HTTP4xx = scrape.Rate(old.HTTP4xx, r.HTTP4xx, dt)
			rec.HTTP5xx = scrape.Rate(old.HTTP5xx, r.HTTP5xx, dt)
		}
		if k.Type == "frontend" && (len(counted) == 0 || counted[k.Proxy]) {
			rec.Utilisation = p.capacity.Utilisation(rec.SessionRate, rec.BytesOut)
		}
		recs = append(recs, rec)
	}
	return recs
}
