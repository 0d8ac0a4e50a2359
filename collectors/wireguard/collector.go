package wireguard

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"time"

	"github.com/grafana/dskit/flagext"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/meridianhq/meridian/collectors/scrape"
	"github.com/meridianhq/meridian/collectors/shard"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Config selects the sources and timing of the WireGuard collector.
type Config struct {
	Interval     time.Duration          `yaml:"interval"`
	Timeout      time.Duration          `yaml:"timeout"`
	Node         string                 `yaml:"node"`
	Devices      bool                   `yaml:"devices"`
	DumpCommand  string                 `yaml:"dump_command"`
	DumpFiles    flagext.StringSliceCSV `yaml:"dump_files"`
	ExporterURLs flagext.StringSliceCSV `yaml:"exporter_urls"`
	Thresholds   `yaml:",inline"`
}

// RegisterFlags registers the flags, prefixed "wireguard.", and sets the defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.Interval, "wireguard.interval", 15*time.Second, "How often every source is read.")
	f.DurationVar(&c.Timeout, "wireguard.timeout", 10*time.Second, "Deadline for reading one source.")
	f.StringVar(&c.Node, "wireguard.node", "", "Inventory node of local devices whose own public key is not in the inventory.")
	f.BoolVar(&c.Devices, "wireguard.devices", false, "Read local devices through wgctrl (kernel netlink and userspace UAPI sockets).")
	f.StringVar(&c.DumpCommand, "wireguard.dump-command", "", "Command printing 'wg show all dump' output, e.g. \"wg show all dump\" or \"ssh host wg show all dump\".")
	f.Var(&c.DumpFiles, "wireguard.dump-files", "Comma-separated files holding 'wg show all dump' output, re-read each interval.")
	f.Var(&c.ExporterURLs, "wireguard.exporter-urls", "Comma-separated /metrics URLs of mdlayher/wireguard_exporter or MindFlavor/prometheus_wireguard_exporter.")
	d := DefaultThresholds
	f.DurationVar(&c.StaleAfter, "wireguard.stale-after", d.StaleAfter, "Handshake age from which a tunnel is degraded (WireGuard's REJECT_AFTER_TIME).")
	f.DurationVar(&c.DownAfter, "wireguard.down-after", d.DownAfter, "Handshake age from which a tunnel is down.")
	f.DurationVar(&c.SilentStale, "wireguard.silent-stale", d.SilentStale, "Time with data sent and nothing received nor re-handshaked from which a tunnel is degraded.")
	f.DurationVar(&c.SilentDown, "wireguard.silent-down", d.SilentDown, "Same silence from which a tunnel is down.")
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return errors.New("wireguard.interval: must be positive")
	case c.Timeout <= 0 || c.Timeout > c.Interval:
		return errors.New("wireguard.timeout: must be positive and at most wireguard.interval")
	case c.StaleAfter <= 0 || c.DownAfter < c.StaleAfter:
		return errors.New("wireguard.down-after: must be at least wireguard.stale-after, which must be positive")
	case c.SilentStale <= 0 || c.SilentDown < c.SilentStale:
		return errors.New("wireguard.silent-down: must be at least wireguard.silent-stale, which must be positive")
	}
	for _, u := range c.ExporterURLs {
		if u == "" {
			return errors.New("wireguard.exporter-urls: empty URL")
		}
	}
	return nil
}

// Collector reads every configured source each interval and appends TunnelStat records.
type Collector struct {
	services.Service

	cfg     Config
	log     *slog.Logger
	app     pipeline.Appender
	inv     inventory.View
	owner   shard.Owner
	metrics *scrape.Metrics
	peers   *prometheus.GaugeVec
	http    *http.Client
	wg      *wgctrl.Client
	now     func() time.Time

	// state per source, then per interface+peer key; a source that fails keeps its state.
	state map[string]map[peerKey]*peerState
}

type peerKey struct{ iface, key string }

// Deps are what the collector needs from its host.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Appender   pipeline.Appender
	Inventory  inventory.View // nil: nothing is mapped
	// Owner shards the exporter URLs over the collector replicas (nil: this one scrapes
	// them all); the node's own devices, dump command and files are always read.
	Owner shard.Owner
}

// New returns the collector as a dskit service: it reads every source each interval,
// and again soon after the inventory changes, so peers are mapped to the new world
// within seconds (scrape.Service).
func New(cfg Config, deps Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	inv := deps.Inventory
	if inv == nil {
		inv = inventory.Static(nil)
	}
	c := &Collector{
		cfg: cfg, log: deps.Logger, app: deps.Appender, inv: inv, owner: deps.Owner,
		metrics: scrape.NewMetrics(deps.Registerer, "wireguard"),
		peers: promauto.With(deps.Registerer).NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_wireguard_peers",
			Help: "Peers seen in the last scrape, by source and tunnel status.",
		}, []string{"source", "status"}),
		http:  &http.Client{},
		now:   time.Now,
		state: map[string]map[peerKey]*peerState{},
	}
	c.Service = scrape.Service(cfg.Interval, inv, c.iteration, c.stopping)
	return c, nil
}

func (c *Collector) stopping(error) error {
	if c.wg != nil {
		return c.wg.Close()
	}
	return nil
}

// iteration reads every source once. Source failures are logged and counted; only a
// pipeline that refuses records (ctx cancelled) ends the service.
func (c *Collector) iteration(ctx context.Context) error {
	idx := c.inv.Snapshot()
	for _, s := range c.sources() {
		recs := c.scrapeSource(ctx, s, idx)
		if len(recs) == 0 {
			continue
		}
		if err := c.app.Append(ctx, recs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Error("wireguard: appending records", "source", s.name, "err", err)
		}
	}
	return nil
}

func (c *Collector) scrapeSource(ctx context.Context, s source, idx *inventory.Snapshot) []pipeline.Record {
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	peers, bad, err := s.read(sctx, c.now())
	for _, e := range bad {
		c.log.Warn("wireguard: skipped bad input", "source", s.name, "err", e)
	}
	c.metrics.Observe(s.name, start, len(bad), err)
	if err != nil {
		c.log.Error("wireguard: source failed; keeping its previous state", "source", s.name, "err", err)
		return nil
	}
	return c.records(s.name, peers, c.now(), idx)
}

// records turns one source's peers into TunnelStats and replaces that source's state.
func (c *Collector) records(src string, peers []Peer, now time.Time, idx *inventory.Snapshot) []pipeline.Record {
	old := c.state[src]
	cur := make(map[peerKey]*peerState, len(peers))
	recs := make([]pipeline.Record, 0, len(peers))
	stats := make([]pipeline.TunnelStat, len(peers))
	counts := map[string]int{}
	for i := range peers {
		p := &peers[i]
		k := peerKey{p.Interface, p.PublicKey}
		var prev *peerState
		if old != nil {
			prev = old[k]
		}
		st, rxRate, txRate := observe(prev, p, now)
		cur[k] = &st
		r := &stats[i]
		*r = pipeline.TunnelStat{
			M:             pipeline.Meta{Time: now, Collector: "wireguard/" + src, Node: c.cfg.Node},
			Interface:     p.Interface,
			PublicKey:     p.PublicKey,
			Endpoint:      p.Endpoint,
			AllowedIPs:    p.AllowedIPs,
			LastHandshake: p.LastHandshake,
			RxBytes:       p.RxBytes,
			TxBytes:       p.TxBytes,
			RxRate:        rxRate,
			TxRate:        txRate,
			Keepalive:     p.Keepalive,
			Status:        status(&st, now, c.cfg.Thresholds),
		}
		if n, ok := idx.NodeByWireGuardKey(p.LocalKey); ok {
			r.M.Node = n.Name
		}
		if n, ok := idx.Node(r.M.Node); ok {
			r.M.Site, r.M.Cluster = n.Site, n.Cluster
		}
		if n, ok := idx.NodeByWireGuardKey(p.PublicKey); ok {
			r.PeerNode, r.PeerSite = n.Name, n.Site
		}
		counts[r.Status]++
		recs = append(recs, r)
	}
	c.state[src] = cur // peers gone from the source are forgotten: state stays bounded
	for _, s := range []string{pipeline.StatusOK, pipeline.StatusDegraded, pipeline.StatusDown, pipeline.StatusUnknown} {
		c.peers.WithLabelValues(src, s).Set(float64(counts[s]))
	}
	return recs
}
