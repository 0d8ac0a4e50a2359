package ceph

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grafana/dskit/flagext"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/meridianhq/meridian/collectors/scrape"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Config selects one Ceph cluster's sources and the timing.
type Config struct {
	Interval time.Duration          `yaml:"interval"`
	Timeout  time.Duration          `yaml:"timeout"`
	Cluster  string                 `yaml:"cluster"`
	FSID     string                 `yaml:"fsid"`
	MgrURLs  flagext.StringSliceCSV `yaml:"mgr_urls"`
	Command  string                 `yaml:"command"`
}

// RegisterFlags registers the flags, prefixed "ceph.", and sets the defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.Interval, "ceph.interval", 15*time.Second, "How often the cluster is read. Keep it at or above the mgr's mgr/prometheus/scrape_interval (15 s by default): the module serves a cache refreshed that often.")
	f.DurationVar(&c.Timeout, "ceph.timeout", 10*time.Second, "Deadline for one read of one source.")
	f.StringVar(&c.Cluster, "ceph.cluster", "ceph", "Name of the cluster in the records' collector field (ceph/<name>).")
	f.StringVar(&c.FSID, "ceph.fsid", "", "Cluster FSID put on records when the source does not give it (the mgr exposition does not).")
	f.Var(&c.MgrURLs, "ceph.mgr-urls", "Comma-separated ceph-mgr prometheus-module /metrics URLs of this cluster, tried in order each interval (list every mgr to ride out a failover).")
	f.StringVar(&c.Command, "ceph.command", "", "Ceph CLI to read '-s', 'osd tree', 'osd dump' and 'osd perf' as JSON, e.g. \"ceph --conf /etc/ceph/ceph.conf\"; empty: off.")
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return errors.New("ceph.interval: must be positive")
	case c.Timeout <= 0 || c.Timeout > c.Interval:
		return errors.New("ceph.timeout: must be positive and at most ceph.interval")
	case c.Cluster == "":
		return errors.New("ceph.cluster: must not be empty")
	}
	for _, u := range c.MgrURLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return fmt.Errorf("ceph.mgr-urls: %q is not an http(s) URL", u)
		}
	}
	return nil
}

// Collector reads the cluster each interval and appends OSDStat, CephHealth and CephPool
// records.
type Collector struct {
	services.Service

	cfg     Config
	log     *slog.Logger
	app     pipeline.Appender
	inv     inventory.View
	metrics *scrape.Metrics
	http    *http.Client
	now     func() time.Time
	prev    map[string]*prevState  // per source kind: "mgr", "cli"
	raw     atomic.Pointer[[]byte] // the last good mgr exposition, for RawSeries
}

// RawSeries gathers the ceph_* series of the last good mgr scrape as the mgr exported
// them (nothing before one, nothing from the CLI), for the ruler's store: operators' Rook
// or ceph-mixin rules loaded as rule_files then read the same series they read in their
// own Prometheus. Samples are re-read at each gather with the scrape's parser, as
// Prometheus's scrape reads them: each sample under its own name (a summary's _sum and
// _count apart), untyped, grouped by name, so a family the mgr splits (Pacific repeats
// ceph_pool_objects_repaired with a HELP per pool) is one family. A bad line loses only
// its own series; it was logged and counted under the mgr's URL at the scrape.
func (c *Collector) RawSeries() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		b := c.raw.Load()
		if b == nil {
			return nil, nil
		}
		fams := map[string]*dto.MetricFamily{}
		scrape.Exposition("", *b, func(name []byte) bool { return bytes.HasPrefix(name, []byte("ceph_")) }, func(sm scrape.Sample) {
			mf := fams[sm.Name]
			if mf == nil {
				mf = &dto.MetricFamily{Name: &sm.Name, Type: dto.MetricType_UNTYPED.Enum()}
				fams[sm.Name] = mf
			}
			m := &dto.Metric{Untyped: &dto.Untyped{Value: &sm.Value}}
			sm.Labels.Range(func(l labels.Label) {
				if l.Name != labels.MetricName {
					m.Label = append(m.Label, &dto.LabelPair{Name: &l.Name, Value: &l.Value})
				}
			})
			mf.Metric = append(mf.Metric, m)
		})
		out := slices.SortedFunc(maps.Values(fams), func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
		return out, nil
	})
}

// Deps are what the collector needs from its host.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Appender   pipeline.Appender
	Inventory  inventory.View // nil: OSD hosts are not mapped to nodes
}

// New returns the collector as a dskit service: it reads the cluster each interval, and
// again soon after the inventory changes (scrape.Service).
func New(cfg Config, deps Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	inv := deps.Inventory
	if inv == nil {
		inv = inventory.Static(nil)
	}
	c := &Collector{
		cfg: cfg, log: deps.Logger, app: deps.Appender, inv: inv,
		metrics: scrape.NewMetrics(deps.Registerer, "ceph"),
		http:    &http.Client{},
		now:     time.Now,
		prev:    map[string]*prevState{},
	}
	c.Service = scrape.Service(cfg.Interval, inv, c.iteration, nil)
	return c, nil
}

func (c *Collector) iteration(ctx context.Context) error {
	hosts := c.inv.Snapshot()
	type read struct {
		kind string
		fn   func(context.Context) (*Snapshot, bool)
	}
	var reads []read
	if len(c.cfg.MgrURLs) > 0 {
		reads = append(reads, read{"mgr", c.readMgr})
	}
	if c.cfg.Command != "" {
		reads = append(reads, read{"cli", c.readCLI})
	}
	for _, r := range reads {
		snap, ok := r.fn(ctx)
		if !ok {
			continue // counted and logged; the previous state stays for the next good read
		}
		now := c.now()
		recs, next := records(snap, c.prev[r.kind], now, "ceph/"+c.cfg.Cluster+"/"+r.kind, c.cfg.FSID, hosts)
		c.prev[r.kind] = next
		if err := c.app.Append(ctx, recs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Error("ceph: appending records", "cluster", c.cfg.Cluster, "err", err)
		}
	}
	return nil
}

// readMgr tries each mgr URL until one gives a usable exposition: a standby mgr, one
// answering 503 (its cache is stale or it has no mon connection), timing out or
// restarting is counted under its URL and skipped.
func (c *Collector) readMgr(ctx context.Context) (*Snapshot, bool) {
	for _, u := range c.cfg.MgrURLs {
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		b, err := scrape.Fetch(sctx, c.http, u)
		cancel()
		var snap *Snapshot
		var bad []error
		if err == nil {
			snap, bad = ParseMetrics(u, b)
			if snap.Health == "" && len(snap.OSDs) == 0 {
				err = fmt.Errorf("GET %s: no ceph_health_status and no OSD in the exposition", u)
			}
		}
		for _, e := range bad {
			c.log.Warn("ceph: skipped bad input", "source", u, "err", e)
		}
		c.metrics.Observe(u, start, len(bad), err)
		if err != nil {
			c.log.Error("ceph: mgr scrape failed; keeping the previous state", "cluster", c.cfg.Cluster, "source", u, "reason", scrape.Reason(err), "err", err)
			continue
		}
		c.raw.Store(&b)
		return snap, true
	}
	return nil, false
}

// readCLI runs `ceph -s`, `ceph osd tree`, `ceph osd dump` and `ceph osd perf` with -f json
// and joins them.
func (c *Collector) readCLI(ctx context.Context) (*Snapshot, bool) {
	base := strings.Fields(c.cfg.Command)
	src := "exec:" + c.cfg.Command
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	run := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(sctx, base[0], append(append(base[1:len(base):len(base)], args...), "-f", "json")...)
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%s %s: %w: %s", c.cfg.Command, strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
			}
			if sctx.Err() != nil {
				err = fmt.Errorf("%w: %w", sctx.Err(), err)
			}
		}
		return out, err
	}
	var bad []error
	snap, err := func() (*Snapshot, error) {
		b, err := run("-s")
		if err != nil {
			return nil, err
		}
		snap, err := ParseStatus(src+" -s", b)
		if err != nil {
			bad = append(bad, err)
			return nil, err
		}
		if b, err = run("osd", "tree"); err != nil {
			return nil, err
		}
		osds, errs := ParseOSDTree(src+" osd tree", b)
		bad = append(bad, errs...)
		if osds == nil {
			return nil, errs[0] // not an osd tree: keep the previous state rather than report no OSDs
		}
		if b, err = run("osd", "dump"); err != nil {
			return nil, err
		}
		osdMap, errs := ParseOSDDump(src+" osd dump", b)
		bad = append(bad, errs...)
		if osdMap == nil {
			return nil, errs[0]
		}
		snap.ApplyOSDMap(osds, osdMap)
		if b, err = run("osd", "perf"); err != nil {
			return nil, err
		}
		perf, errs := ParseOSDPerf(src+" osd perf", b)
		bad = append(bad, errs...)
		for id, o := range osds {
			if p, ok := perf[id]; ok {
				o.CommitLatencyMs, o.ApplyLatencyMs = p.CommitLatencyMs, p.ApplyLatencyMs
			}
		}
		snap.OSDs = osds
		return snap, nil
	}()
	for _, e := range bad {
		c.log.Warn("ceph: skipped bad input", "source", src, "err", e)
	}
	c.metrics.Observe(src, start, len(bad), err)
	if err != nil {
		c.log.Error("ceph: CLI read failed; keeping the previous state", "cluster", c.cfg.Cluster, "source", src, "reason", scrape.Reason(err), "err", err)
		return nil, false
	}
	return snap, true
}
