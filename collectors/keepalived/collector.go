// Package keepalived collects the VRRP layer of each POP's front door from Keepalived's
// notify FIFO: per instance and node its state and priority, who holds the VIP, and every
// transition, failovers with how long the VIP had no holder.
package keepalived

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Config lists the keepalived daemons to follow.
type Config struct {
	Interval time.Duration `yaml:"interval"`
	Nodes    []Node        `yaml:"nodes"`
}

// Node is one keepalived daemon of a POP's front-door pair.
type Node struct {
	POP  string `yaml:"pop"`
	Node string `yaml:"node"`
	// FIFO is keepalived's global_defs notify_fifo; created if missing.
	FIFO string `yaml:"fifo"`
}

// RegisterFlags registers the flags, prefixed "keepalived.", and sets the defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.Interval, "keepalived.interval", 5*time.Second, "How often each instance's state is recorded (transitions are recorded as they happen).")
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if c.Interval <= 0 {
		return errors.New("keepalived.interval: must be positive")
	}
	seen := map[string]bool{}
	for i, n := range c.Nodes {
		switch {
		case n.POP == "" || n.Node == "" || n.FIFO == "":
			return fmt.Errorf("keepalived.nodes[%d]: pop, node and fifo are required", i)
		case seen[n.FIFO]:
			return fmt.Errorf("keepalived.nodes[%d].fifo: %s is read by another node (a FIFO line goes to one reader)", i, n.FIFO)
		}
		seen[n.FIFO] = true
	}
	return nil
}

// Deps are what the collector is given.
type Deps struct {
	Inventory  inventory.View // the live inventory, read at each event; nil: nothing is mapped
	Appender   pipeline.Appender
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Collector follows every node's FIFO.
type Collector struct {
	services.Service

	cfg Config
	d   Deps

	mu      sync.Mutex
	tracker *Tracker

	master      *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	failover    *prometheus.HistogramVec
	parseErrors *prometheus.CounterVec
}

// New returns the collector as a dskit service.
func New(cfg Config, d Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Inventory == nil {
		d.Inventory = inventory.Static(&inventory.Inventory{})
	}
	f := promauto.With(d.Registerer)
	c := &Collector{
		cfg: cfg, d: d, tracker: NewTracker(),
		master: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_keepalived_master",
			Help: "1 while the node is MASTER of the VRRP instance (holds its VIPs). More than one per pop and instance is a split brain.",
		}, []string{"pop", "instance", "node"}),
		transitions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_keepalived_transitions_total",
			Help: "VRRP state changes of the instance on the node (a daemon going away counts as one, to UNKNOWN).",
		}, []string{"pop", "instance", "node"}),
		failover: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meridian_keepalived_failover_duration_seconds",
			Help:    "Time the instance's VIPs had no holder, from the previous master leaving to a new one taking over.",
			Buckets: []float64{0.25, 0.5, 1, 2, 4, 8, 16},
		}, []string{"pop", "instance"}),
		parseErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_keepalived_parse_errors_total",
			Help: "Malformed notify FIFO lines skipped, by source.",
		}, []string{"source"}),
	}
	c.Service = services.NewBasicService(nil, c.running, nil)
	return c, nil
}

func (c *Collector) running(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, n := range c.cfg.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); c.follow(ctx, n) }()
	}
	defer wg.Wait()
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.appendStates(ctx)
		}
	}
}

// place is where a node's records go on the map.
type place struct {
	site, cluster string
	vips          []string
}

// mapNode maps a POP and node to the POP's site and VIPs and the node's cluster: the one
// place this collector reads the inventory.
func mapNode(inv *inventory.Snapshot, pop, node string) place {
	var p place
	if po, ok := inv.POP(pop); ok {
		p.site = po.Site
		for _, v := range po.VIPs {
			p.vips = append(p.vips, v.String())
		}
	}
	if n, ok := inv.Node(node); ok {
		p.cluster = n.Cluster
	}
	return p
}

func (c *Collector) meta(m *pipeline.Meta, pop, node string) place {
	p := mapNode(c.d.Inventory.Snapshot(), pop, node)
	m.Collector, m.Site, m.Cluster, m.Node = "keepalived/"+node, p.site, p.cluster, node
	return p
}

func (c *Collector) appendStates(ctx context.Context) {
	c.mu.Lock()
	states := c.tracker.States(time.Now(), func(pop string) []string { return mapNode(c.d.Inventory.Snapshot(), pop, "").vips })
	c.mu.Unlock()
	recs := make([]pipeline.Record, len(states))
	for i, s := range states {
		c.meta(&s.M, s.POP, s.M.Node)
		recs[i] = s
	}
	c.append(ctx, recs)
}

func (c *Collector) append(ctx context.Context, recs []pipeline.Record) {
	if len(recs) == 0 {
		return
	}
	if err := c.d.Appender.Append(ctx, recs...); err != nil && ctx.Err() == nil {
		c.d.Logger.Error("keepalived: appending records", "err", err)
	}
}

// apply records transitions in the metrics and the pipeline.
func (c *Collector) apply(ctx context.Context, n Node, trs ...*pipeline.VRRPTransition) {
	var recs []pipeline.Record
	for _, tr := range trs {
		if tr == nil {
			continue
		}
		c.meta(&tr.M, n.POP, n.Node)
		c.transitions.WithLabelValues(n.POP, tr.Instance, n.Node).Inc()
		v := 0.0
		if tr.To == pipeline.VRRPMaster {
			v = 1
		}
		c.master.WithLabelValues(n.POP, tr.Instance, n.Node).Set(v)
		if tr.Failover {
			c.failover.WithLabelValues(n.POP, tr.Instance).Observe(tr.Duration.Seconds())
			c.d.Logger.Warn("keepalived: failover", "pop", n.POP, "instance", tr.Instance, "from", tr.PreviousMaster, "to", n.Node, "duration", tr.Duration)
		}
		recs = append(recs, tr)
	}
	c.append(ctx, recs)
}

// retry is how long a FIFO without a writer (keepalived not running) waits to be opened
// again.
const retry = 250 * time.Millisecond

// follow reads n's FIFO until ctx ends. keepalived keeps its end open while it runs, so
// end of file means the daemon is gone: its instances become UNKNOWN rather than keep a
// mastership nobody exercises.
func (c *Collector) follow(ctx context.Context, n Node) {
	src := "fifo:" + n.FIFO
	for ctx.Err() == nil {
		f, err := openFIFO(n.FIFO)
		if err != nil {
			c.d.Logger.Error("keepalived: opening the notify FIFO", "source", src, "err", err)
		} else {
			stop := context.AfterFunc(ctx, func() { f.Close() })
			sc := bufio.NewScanner(f)
			line := 0
			for sc.Scan() {
				line++
				e, err := ParseLine(sc.Text())
				if errors.Is(err, errIgnored) {
					continue
				}
				if err != nil {
					c.parseErrors.WithLabelValues(src).Inc()
					c.d.Logger.Warn("keepalived: skipped bad input", "source", src, "line", line, "err", err)
					continue
				}
				c.mu.Lock()
				tr := c.tracker.Apply(time.Now(), n.POP, n.Node, e)
				c.mu.Unlock()
				c.apply(ctx, n, tr)
			}
			stop()
			f.Close()
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			trs := c.tracker.Gone(time.Now(), n.POP, n.Node)
			c.mu.Unlock()
			c.apply(ctx, n, trs...)
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}

// openFIFO opens path for reading without waiting for a writer (O_NONBLOCK, so reads go
// through Go's poller and Close interrupts them), making the FIFO first if needed.
func openFIFO(path string) (*os.File, error) {
	if err := syscall.Mkfifo(path, 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode()&fs.ModeNamedPipe == 0 {
		return nil, fmt.Errorf("%s is not a FIFO", path)
	}
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
