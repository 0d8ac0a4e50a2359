// Package geodns probes the user-facing edge from one vantage: DNS answers of the
// authoritative GeoDNS as seen from each client region (EDNS Client Subnet), and TCP,
// HTTP(S) and ICMP round trips to each POP. It emits pipeline.Probe records and keeps
// a live vantage × POP matrix.
package geodns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Prober runs every probe of its vantages, each on its own jittered timer.
type Prober struct {
	services.Service
	cfg      Config
	inv      inventory.View
	app      pipeline.Appender
	log      *slog.Logger
	matrix   *Matrix
	vantages []*vantage
	stalls   *stallWatch

	probes     *prometheus.CounterVec
	rtt        *prometheus.HistogramVec
	stallsSeen prometheus.Counter
}

// vantage is one site's way out: probes dial from its source address.
type vantage struct {
	site   string
	dialer *net.Dialer // TCP
	udp    *net.Dialer // DNS
	http   *http.Client
}

// target is one recurring probe.
type target struct {
	v     *vantage
	every time.Duration
	pop   string
	svc   string
	reg   string
	run   func(ctx context.Context) pipeline.Probe
}

// Deps are what the prober needs from its host.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Appender   pipeline.Appender
	Inventory  inventory.View // its POPs, services and client regions are the targets
}

// New builds a prober for cfg.Vantages over the inventory's POPs, services and client
// regions; when those change, the probes follow at once. With no vantages it probes
// nothing.
func New(cfg Config, deps Deps) (*Prober, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	inv, reg := deps.Inventory, deps.Registerer
	if inv == nil {
		inv = inventory.Static(nil)
	}
	p := &Prober{
		cfg: cfg, inv: inv, app: deps.Appender, log: deps.Logger,
		matrix: NewMatrix(),
		stalls: newStallWatch(cfg.Timeout/4, time.Now()),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_geodns_probes_total",
			Help: "Probes sent, by vantage, method and result (ok, fail, inconclusive: ran across a stall of this process, not recorded).",
		}, []string{"vantage", "method", "result"}),
		stallsSeen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_geodns_prober_stalls_total", Help: "Times the prober process was not scheduled for a quarter of the probe timeout or more.",
		}),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meridian_geodns_probe_rtt_seconds", Help: "Round-trip time of successful probes, by vantage and method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"vantage", "method"}),
	}
	for i, v := range cfg.Vantages {
		if _, ok := inv.Snapshot().Site(v.Site); !ok {
			return nil, fmt.Errorf("geodns.vantages[%d].site: unknown site %q", i, v.Site)
		}
		d, u := &net.Dialer{}, &net.Dialer{}
		if v.SourceAddress != "" {
			// Port 0: the kernel picks; the address is all that makes this vantage distinct.
			ip := netip.MustParseAddr(v.SourceAddress).AsSlice()
			d.LocalAddr, u.LocalAddr = &net.TCPAddr{IP: ip}, &net.UDPAddr{IP: ip}
		}
		p.vantages = append(p.vantages, &vantage{site: v.Site, dialer: d, udp: u, http: &http.Client{
			Timeout: cfg.Timeout,
			// Health URLs of POPs behind a VIP often carry the service's certificate, not the
			// VIP's name; the probe measures reachability and latency, not identity.
			Transport:     &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}})
	}
	for _, c := range []prometheus.Collector{p.probes, p.rtt, p.stallsSeen} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("geodns metrics: %w", err)
		}
	}
	p.Service = services.NewBasicService(nil, p.running, nil).WithName("geodns-prober")
	return p, nil
}

// Matrix is the live vantage × POP view of this vantage's probes.
func (p *Prober) Matrix() *Matrix { return p.matrix }

func (p *Prober) targets(snap *inventory.Snapshot) []target {
	var ts []target
	for _, v := range p.vantages {
		ts = append(ts, p.vantageTargets(snap, v)...)
	}
	return ts
}

func (p *Prober) vantageTargets(snap *inventory.Snapshot, v *vantage) []target {
	var ts []target
	inv := snap.Inventory()
	popOf := func(a netip.Addr) (string, bool) {
		pop, ok := snap.POPByVIP(a)
		return pop.Name, ok
	}
	for _, pop := range inv.POPs {
		if pop.TCPAddr != "" {
			addr := pop.TCPAddr
			ts = append(ts, target{v: v, every: p.cfg.every(p.cfg.TCPInterval), pop: pop.Name, run: func(ctx context.Context) pipeline.Probe { return probeTCP(ctx, v.dialer, addr) }})
		}
		if pop.HealthURL != "" {
			url := pop.HealthURL
			ts = append(ts, target{v: v, every: p.cfg.every(p.cfg.HTTPInterval), pop: pop.Name, run: func(ctx context.Context) pipeline.Probe { return probeHTTP(ctx, v.http, url) }})
		}
		if p.cfg.ICMP && len(pop.VIPs) > 0 {
			vip := pop.VIPs[0]
			ts = append(ts, target{v: v, every: p.cfg.every(p.cfg.ICMPInterval), pop: pop.Name, run: func(ctx context.Context) pipeline.Probe { return probeICMP(ctx, vip) }})
		}
	}
	if p.cfg.DNSServer == "" {
		return ts
	}
	for _, svc := range inv.Services {
		qtype := dns.TypeA
		if !hasV4(snap, svc) {
			qtype = dns.TypeAAAA
		}
		for _, r := range inv.ClientRegions {
			if !r.SamplePrefix.IsValid() {
				continue
			}
			name, subnet := svc.Name, r.SamplePrefix
			ts = append(ts, target{v: v, every: p.cfg.every(p.cfg.DNSInterval), svc: svc.Name, reg: r.Name, run: func(ctx context.Context) pipeline.Probe {
				return probeDNS(ctx, v.udp, p.cfg.DNSServer, name, qtype, subnet, popOf)
			}})
		}
	}
	return ts
}

func hasV4(snap *inventory.Snapshot, svc inventory.Service) bool {
	for _, name := range svc.POPs {
		if pop, ok := snap.POP(name); ok {
			for _, v := range pop.VIPs {
				if v.Unmap().Is4() {
					return true
				}
			}
		}
	}
	return false
}

func (p *Prober) running(ctx context.Context) error {
	if p.cfg.ICMP {
		if c, _, err := icmpSocket(false); err != nil {
			p.log.Warn("icmp probes skipped", "reason", err)
			p.cfg.ICMP = false
		} else {
			c.Close()
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.stalls.run(ctx, func(d time.Duration) {
			p.stallsSeen.Inc()
			p.log.Warn("prober stalled: probes across the stall are not recorded", "for", d.Round(time.Millisecond))
		})
	}()
	changes, cancel := p.inv.Subscribe()
	defer cancel()
	snap := p.inv.Snapshot()
	for {
		// The targets of this snapshot run until ctx ends or the probed part of the world
		// (POPs, services, client regions) changes; then they start over from the new one.
		tctx, stop := context.WithCancel(ctx)
		var targets sync.WaitGroup
		for _, t := range p.targets(snap) {
			targets.Go(func() { p.loop(tctx, t) })
		}
		next, done := p.awaitTargetChange(ctx, changes, snap)
		stop()
		targets.Wait()
		if done {
			wg.Wait()
			return nil
		}
		snap = next
	}
}

// awaitTargetChange returns the first snapshot whose probes differ from snap's; done when
// ctx ends first.
func (p *Prober) awaitTargetChange(ctx context.Context, changes <-chan *inventory.Snapshot, snap *inventory.Snapshot) (next *inventory.Snapshot, done bool) {
	for {
		select {
		case <-ctx.Done():
			return nil, true
		case next = <-changes:
			if !sameTargets(snap, next) {
				p.log.Info("inventory changed: the probes follow", "version", next.Version())
				return next, false
			}
		}
	}
}

// sameTargets reports whether two snapshots give the same probes.
func sameTargets(a, b *inventory.Snapshot) bool {
	x, y := a.Inventory(), b.Inventory()
	return reflect.DeepEqual(x.POPs, y.POPs) && reflect.DeepEqual(x.Services, y.Services) && reflect.DeepEqual(x.ClientRegions, y.ClientRegions)
}

// loop runs one target until ctx ends. Each wait is the interval ± jitter, so that many
// vantages probing one POP do not arrive in lockstep. A first failure is confirmed or
// cleared after FastInterval: steering drains on consecutive failures, and waiting a
// whole interval for the second one would double detection time. An inconclusive probe
// is repeated after FastInterval too, and leaves the run of failures as it was.
func (p *Prober) loop(ctx context.Context, t target) {
	timer := time.NewTimer(time.Duration(rand.Float64() * float64(t.every)))
	defer timer.Stop()
	wasOK, excused := true, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		r := p.probeOnce(ctx, t, excused < maxExcused)
		spread := p.cfg.Jitter * float64(t.every)
		wait := t.every + time.Duration((rand.Float64()*2-1)*spread)
		if r == inconclusive {
			excused++
		} else {
			excused = 0
		}
		if (r == inconclusive || r == failed && wasOK) && p.cfg.FastInterval > 0 {
			wait = min(wait, p.cfg.FastInterval)
		}
		if r != inconclusive {
			wasOK = r == succeeded
		}
		timer.Reset(wait)
	}
}

// result is what one probe says about its target.
type result int

const (
	succeeded result = iota
	failed
	inconclusive // ran across a stall of this process: says nothing about the POP
)

// probeOnce runs one probe and reports its result (succeeded when shutting down). With
// excuse, a probe that timed out or succeeded across a stall is inconclusive: its timeout
// or its round trip timed the stall, not the POP. It is counted in the metric, not
// recorded. Any other failure (refused, an error status) is the POP's answer, stall or not.
func (p *Prober) probeOnce(ctx context.Context, t target, excuse bool) result {
	pctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	now := time.Now()
	rec := t.run(pctx)
	end := time.Now()
	timedOut := pctx.Err() != nil || end.Sub(now) >= p.cfg.Timeout // the HTTP client has its own
	cancel()
	if ctx.Err() != nil {
		return succeeded // shutting down: a cancelled probe says nothing about the POP
	}
	if excuse && (timedOut || rec.Success) && p.stalls.during(now, end, end) {
		p.probes.WithLabelValues(t.v.site, rec.Method, "inconclusive").Inc()
		return inconclusive
	}
	rec.M = pipeline.Meta{Time: now, Collector: "geodns/" + t.v.site, Site: t.v.site}
	rec.Vantage = t.v.site
	rec.Service, rec.ClientRegion = t.svc, t.reg
	if t.pop != "" {
		rec.POP = t.pop
	}
	result := "ok"
	if !rec.Success {
		result = "fail"
	} else {
		p.rtt.WithLabelValues(t.v.site, rec.Method).Observe(rec.RTT.Seconds())
	}
	p.probes.WithLabelValues(t.v.site, rec.Method, result).Inc()
	p.matrix.Observe(&rec)
	if err := p.app.Append(ctx, &rec); err != nil && !errors.Is(err, context.Canceled) {
		p.log.Warn("append probe", "err", err)
	}
	if !rec.Success {
		return failed
	}
	return succeeded
}
