// Package hubble collects Cilium Hubble flows from Hubble Relays' observer.GetFlows
// streams, turns them into Flow records and workload FlowEdge records, and appends both
// to the pipeline. Transport (stream.go: gRPC, TLS, resume) is separate from decoding
// (wire.go and parse.go: pure functions over the wire bytes) and from aggregation
// (edges.go).
package hubble

import (
	"context"
	"errors"
	"fmt"
	flowpb "github.com/cilium/cilium/api/v1/flow"
	"log/slog"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/collectors/shard"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Collector streams flows from every configured relay it owns, one goroutine each: a
// relay that fails or stalls is retried on its own and never holds up the others.
type Collector struct {
	services.Service
	relays []*relay
	owner  shard.Owner
}

// Deps are what the collector needs from its host.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Appender   pipeline.Appender
	// Inventory maps each relay's cluster to its site and names pods' owners from the
	// cluster's API (nil: neither); a change applies from the next flow on.
	Inventory inventory.View
	// Owner shards the relays over the collector replicas (nil: this one streams them all).
	Owner shard.Owner
}

// New validates cfg and returns the collector service.
func New(cfg Config, deps Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := newMetrics(deps.Registerer)
	parser := NewParser(cfg.LabelKeys)
	inv := deps.Inventory
	if inv == nil {
		inv = inventory.Static(nil)
	}
	c := &Collector{owner: deps.Owner}
	for _, rc := range cfg.Relays {
		r, err := newRelay(&cfg, rc, inv, parser, deps.Appender, m, deps.Logger.With("relay", rc.Name, "address", rc.Address))
		if err != nil {
			return nil, fmt.Errorf("hubble.relays %s: %w", rc.Name, err)
		}
		c.relays = append(c.relays, r)
	}
	c.Service = services.NewBasicService(nil, c.running, nil)
	return c, nil
}

// ownershipCheck is how often a sharded collector asks the ring which relays it owns.
const ownershipCheck = time.Second

// running streams the relays this replica owns, starting and stopping them as the ring
// moves them. A relay handed to another replica is stopped like at shutdown (its
// records appended) and forgets its resume point: if it comes back, the other replica
// has stored the flows since, so it starts from backfill.
func (c *Collector) running(ctx context.Context) error {
	type live struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	streaming := map[*relay]live{}
	stop := func(r *relay) {
		l := streaming[r]
		l.cancel()
		<-l.done
		delete(streaming, r)
	}
	var check <-chan time.Time
	if c.owner != nil {
		t := time.NewTicker(ownershipCheck)
		defer t.Stop()
		check = t.C
	}
	for {
		for _, r := range c.relays {
			owns := c.owner == nil || c.owner.Owns(r.rc.Name)
			_, on := streaming[r]
			switch {
			case owns && !on:
				rctx, cancel := context.WithCancel(ctx)
				l := live{cancel, make(chan struct{})}
				streaming[r] = l
				go func() {
					defer close(l.done)
					r.run(rctx)
				}()
			case !owns && on:
				r.log.Info("hubble relay moved to another collector replica")
				stop(r)
				r.handOver()
			}
			if owns {
				r.m.owned.Set(1)
			} else {
				r.m.owned.Set(0)
			}
		}
		select {
		case <-ctx.Done(): // also with no relays: a finished service would stop the process
			for r := range streaming {
				streaming[r].cancel()
			}
			for r := range streaming {
				stop(r)
			}
			return nil
		case <-check:
		}
	}
}

// RelayStatus is one relay's state, for readiness and debugging.
type RelayStatus struct {
	Name      string
	Connected bool
	LastFlow  time.Time // resume point
	LastError string
}

// Status reports every relay's state.
func (c *Collector) Status() []RelayStatus {
	out := make([]RelayStatus, 0, len(c.relays))
	for _, r := range c.relays {
		out = append(out, r.status())
	}
	return out
}

// relay is one relay's stream loop and the state that survives reconnections: the
// resume point, the flows seen at it, and the open edge intervals.
type relay struct {
	cfg    *Config
	rc     RelayConfig
	inv    inventory.View
	dial   dialer
	meta   pipeline.Meta
	dec    *decoder
	in     *inbox
	app    pipeline.Appender
	log    *slog.Logger
	m      relayMetrics
	edges  *edgeAggregator
	resume resumePoint

	sampleAcc float64
	// Overload: the inbox filled up since the loop last took from it.
	overloaded    bool
	overloadSince time.Time
	overloadAcc   float64         // sampler of overload_sample_rate
	shed          uint64          // raw flows sampled out in this episode
	slab          []pipeline.Flow // records not yet handed to the pipeline; slab[0] is the scratch
	taken         batch           // messages taken from the inbox
	batch         []pipeline.Record
	lastRecv      time.Time // wall time of the newest message, to flush edges when idle

	mu        sync.Mutex
	connected bool
	lastErr   error
}

type relayMetrics struct {
	received, stored, duplicates, malformed, edges, overflow, relayErrors, checkpointErrors prometheus.Counter
	sampledRate, sampledOverload, overloadSeconds                                           prometheus.Counter
	connected, lastFlowTime, owned, overloaded                                              prometheus.Gauge
	incomplete                                                                              *prometheus.CounterVec
	lost                                                                                    *prometheus.CounterVec
}

func newRelay(cfg *Config, rc RelayConfig, inv inventory.View, parser *Parser, app pipeline.Appender, m *metrics, log *slog.Logger) (*relay, error) {
	d, err := newDialer(cfg, rc)
	if err != nil {
		return nil, err
	}
	n := rc.Name
	r := &relay{cfg: cfg, rc: rc, inv: inv, dial: d, dec: newDecoder(parser), in: newInbox(), app: app, log: log,
		meta: pipeline.Meta{Collector: "hubble/" + n, Cluster: rc.Cluster},
		m: relayMetrics{received: m.received.WithLabelValues(n), stored: m.stored.WithLabelValues(n),
			duplicates: m.duplicates.WithLabelValues(n), malformed: m.malformed.WithLabelValues(n), edges: m.edges.WithLabelValues(n), overflow: m.overflow.WithLabelValues(n),
			relayErrors: m.relayErrors.WithLabelValues(n), checkpointErrors: m.checkpointErrors.WithLabelValues(n),
			connected:    m.connected.WithLabelValues(n),
			lastFlowTime: m.lastFlowTime.WithLabelValues(n), owned: m.owned.WithLabelValues(n),
			sampledRate: m.sampled.WithLabelValues(n, "rate"), sampledOverload: m.sampled.WithLabelValues(n, "overload"),
			overloaded: m.overloaded.WithLabelValues(n), overloadSeconds: m.overloadSeconds.WithLabelValues(n),
			incomplete: m.incomplete.MustCurryWith(prometheus.Labels{"relay": n}),
			lost:       m.lost.MustCurryWith(prometheus.Labels{"relay": n})},
	}
	// Each loss source's counter exists from the start at 0: "lost per second" reads 0,
	// not nothing, while Hubble loses nothing.
	for _, src := range flowpb.LostEventSource_name {
		r.m.lost.WithLabelValues(src)
	}
	r.edges = newEdgeAggregator(r.meta, cfg.EdgeInterval, cfg.EdgeGrace, cfg.MaxPairs, cfg.MaxWindows,
		func(k int) { r.m.overflow.Add(float64(k)) })
	return r, nil
}

// follow applies a new inventory snapshot: the cluster's site, its pods' owners.
func (r *relay) follow() {
	s := r.inv.Snapshot()
	if s == r.dec.snap {
		return
	}
	r.dec.follow(s, r.rc.Cluster)
	c, _ := s.Cluster(r.rc.Cluster)
	r.meta.Site, r.edges.meta.Site = c.Site, c.Site
}

func (r *relay) status() RelayStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := RelayStatus{Name: r.rc.Name, Connected: r.connected, LastFlow: r.resume.load()}
	if r.lastErr != nil {
		s.LastError = r.lastErr.Error()
	}
	return s
}

func (r *relay) setState(connected bool, err error) {
	r.mu.Lock()
	r.connected, r.lastErr = connected, err
	r.mu.Unlock()
	if connected {
		r.m.connected.Set(1)
	} else {
		r.m.connected.Set(0)
	}
}

// run streams until ctx ends, reconnecting with exponential backoff; the backoff starts
// over once a stream has delivered messages.
func (r *relay) run(ctx context.Context) {
	if r.cfg.StateDir != "" {
		path := checkpointPath(r.cfg.StateDir, r.rc.Name)
		if err := r.resume.takeCheckpoint(path); err != nil {
			r.m.checkpointErrors.Inc()
			r.log.Error("hubble resume point unreadable; asking for backfill instead", "err", err)
		} else if last := r.resume.load(); !last.IsZero() {
			r.log.Info("hubble resuming where the last run stopped", "since", last)
		}
	}
	tick := time.NewTicker(r.cfg.FlushInterval)
	defer tick.Stop()
	delay := r.cfg.BackoffMin
	for ctx.Err() == nil {
		got, err := r.stream(ctx, tick.C)
		r.setState(false, err)
		if ctx.Err() != nil {
			break
		}
		if got {
			delay = r.cfg.BackoffMin
		}
		r.m.relayErrors.Inc()
		r.log.Warn("hubble relay stream failed; retrying", "err", err, "retry_in", delay)
		r.appendPending(ctx)
		wait := time.NewTimer(delay)
	waiting:
		for {
			select {
			case <-ctx.Done():
				wait.Stop()
				break waiting
			case <-wait.C:
				break waiting
			case <-tick.C:
				r.flushIdleEdges(ctx)
			}
		}
		delay = min(2*delay, r.cfg.BackoffMax)
	}
	// Shutting down: hand over what is buffered, with a deadline of its own.
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	r.batch = append(r.batch, r.edges.flush()...)
	if err := r.appendPending(final); err != nil {
		r.log.Error("hubble records lost at shutdown; the next start asks for backfill", "err", err)
		return
	}
	if r.cfg.StateDir != "" {
		if err := r.resume.saveCheckpoint(checkpointPath(r.cfg.StateDir, r.rc.Name)); err != nil {
			r.m.checkpointErrors.Inc()
			r.log.Error("hubble resume point not saved; the next start asks for backfill", "err", err)
		}
	}
}

// stream runs one GetFlows stream to its end. got reports whether it delivered anything.
func (r *relay) stream(ctx context.Context, tick <-chan time.Time) (got bool, err error) {
	closeConn, err := r.dial.open(ctx, r.resume.request(r.cfg.Backfill, r.rc), r.in)
	if err != nil {
		return false, err
	}
	defer closeConn()
	defer func() {
		if r.overloaded {
			r.endOverload("hubble stream ended while overloaded")
		}
	}()
	r.setState(true, nil)
	r.resume.startConnection()
	for {
		ended, err := r.in.take(&r.taken)
		r.checkOverload()
		for i := range r.taken.len() {
			got = true
			r.handle(r.taken.msg(i))
			if len(r.batch) >= r.cfg.BatchSize {
				if err := r.appendPending(ctx); err != nil {
					return got, err
				}
			}
		}
		if ended {
			if err == nil {
				err = errors.New("relay ended the stream")
			}
			return got, err
		}
		if r.taken.len() > 0 {
			select { // a busy stream still flushes on time
			case <-tick:
				if err := r.appendPending(ctx); err != nil {
					return got, err
				}
			default:
			}
			continue
		}
		select {
		case <-r.in.wake:
		case <-tick:
			if err := r.appendPending(ctx); err != nil {
				return got, err
			}
			r.flushIdleEdges(ctx)
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}

// checkOverload starts an overload episode when the receiver had to wait for the loop
// (the inbox was full), and ends it once the loop takes little at a time again. Each is
// logged once; meanwhile the gauge is 1 and, with overload: sample, raw flows are sampled.
func (r *relay) checkOverload() {
	switch {
	case r.taken.full && !r.overloaded:
		r.overloaded, r.overloadSince, r.shed = true, time.Now(), 0
		r.m.overloaded.Set(1)
		if r.cfg.Overload == OverloadSample {
			r.log.Warn("hubble flows arrive faster than they are stored; storing a sample of the raw flows until caught up, edges still count every flow",
				"overload_sample_rate", r.cfg.OverloadSampleRate)
		} else {
			r.log.Warn("hubble flows arrive faster than they are stored; slowing the relay's stream down (gRPC flow control) until caught up")
		}
	case r.overloaded && !r.taken.full && r.taken.len() < inboxMessages/8 && len(r.taken.buf) < inboxBytes/8:
		r.endOverload("hubble caught up with the relay")
	}
}

func (r *relay) endOverload(msg string) {
	d := time.Since(r.overloadSince)
	r.overloaded = false
	r.m.overloaded.Set(0)
	r.m.overloadSeconds.Add(d.Seconds())
	r.log.Info(msg, "overloaded_for", d, "raw_flows_sampled", r.shed)
}

// flushIdleEdges emits every open edge interval once no flow arrived for an interval
// plus grace: flow time stands still while a relay is quiet.
func (r *relay) flushIdleEdges(ctx context.Context) {
	if time.Since(r.lastRecv) < r.cfg.EdgeInterval+r.cfg.EdgeGrace {
		return
	}
	if edges := r.edges.flush(); len(edges) > 0 {
		r.batch = append(r.batch, edges...)
		r.appendPending(ctx)
	}
}

func (r *relay) appendPending(ctx context.Context) error {
	if len(r.batch) == 0 {
		return nil
	}
	var flows, edges int
	for _, rec := range r.batch {
		if rec.Kind() == pipeline.KindFlow {
			flows++
		} else {
			edges++
		}
	}
	if err := r.app.Append(ctx, r.batch...); err != nil {
		return fmt.Errorf("append to pipeline: %w", err)
	}
	r.m.stored.Add(float64(flows))
	r.m.edges.Add(float64(edges))
	r.batch = make([]pipeline.Record, 0, r.cfg.BatchSize)
	return nil
}
