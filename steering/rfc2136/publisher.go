// Package rfc2136 publishes steering decisions to an external authoritative server
// (BIND, Knot, PowerDNS) as TSIG-signed dynamic updates (RFC 2136, RFC 8945).
//
// Mapping: for service S (e.g. api.example.net.) and client region R, the name
// R.S (e.g. paris.api.example.net.) holds the A and AAAA records of every POP whose
// weight for R is above zero; S itself holds the set of the default region. Plain DNS
// cannot carry weights, so a weighted set is published as its members; the external
// server's own geo feature (BIND views, Knot geoip module, PowerDNS GeoIP) maps clients
// to R.S with a CNAME.
package rfc2136

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/steering/pick"
)

// Config is where and how to publish. The TSIG secret is read from a file or an
// environment variable, never from the config itself, and is never logged.
type Config struct {
	Server        string        `yaml:"server"`                                           // host:port of the primary; "" disables publishing
	Zone          string        `yaml:"zone"`                                             // zone to update
	KeyName       string        `yaml:"key_name"`                                         // TSIG key name
	KeyAlgorithm  string        `yaml:"key_algorithm"`                                    // hmac-sha256 (default), hmac-sha512, ...
	KeySecretFile string        `yaml:"key_secret_file" secret:"MERIDIAN_RFC2136_SECRET"` // file holding the base64 secret; else $MERIDIAN_RFC2136_SECRET
	Interval      time.Duration `yaml:"interval"`                                         // how often changed sets are pushed
	Resync        time.Duration `yaml:"resync"`                                           // how often every set is pushed again, repairing drift
	TTL           uint32        `yaml:"ttl"`
	Timeout       time.Duration `yaml:"timeout"`
}

// RegisterFlags registers the publisher flags with the "steering.rfc2136." prefix.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	p := "steering.rfc2136."
	f.StringVar(&c.Server, p+"server", "", "host:port of the authoritative server taking RFC 2136 updates; empty disables publishing.")
	f.StringVar(&c.Zone, p+"zone", "", "Zone to update.")
	f.StringVar(&c.KeyName, p+"key-name", "", "TSIG key name.")
	f.StringVar(&c.KeyAlgorithm, p+"key-algorithm", "hmac-sha256", "TSIG algorithm.")
	f.StringVar(&c.KeySecretFile, p+"key-secret-file", "", "File holding the base64 TSIG secret (default: env "+SecretEnv+").")
	f.DurationVar(&c.Interval, p+"interval", time.Second, "How often changed answer sets are pushed.")
	f.DurationVar(&c.Resync, p+"resync", 5*time.Minute, "How often every answer set is pushed again.")
	f.Func(p+"ttl", "TTL of published records in seconds (default 30).", func(s string) error {
		_, err := fmt.Sscan(s, &c.TTL)
		return err
	})
	c.TTL = 30
	f.DurationVar(&c.Timeout, p+"timeout", 3*time.Second, "Timeout of one update.")
}

// Validate names the offending field.
func (c *Config) Validate() error {
	if c.Server == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Server); err != nil {
		return fmt.Errorf("steering.rfc2136.server: %w", err)
	}
	if _, ok := dns.IsDomainName(c.Zone); !ok || c.Zone == "" {
		return fmt.Errorf("steering.rfc2136.zone: %q is not a domain name", c.Zone)
	}
	if c.KeyName == "" {
		return fmt.Errorf("steering.rfc2136.key_name: required (updates are always signed)")
	}
	if c.Interval <= 0 {
		return fmt.Errorf("steering.rfc2136.interval: must be > 0")
	}
	return nil
}

// SecretEnv holds the TSIG secret when key_secret_file is not set: one fixed name, as
// for every other secret (internal/secret), so no setting can point it elsewhere.
const SecretEnv = "MERIDIAN_RFC2136_SECRET"

func (c *Config) secret() (string, error) {
	s, err := secret.Read(secret.Source{File: c.KeySecretFile, Env: SecretEnv, Field: "steering.rfc2136.key_secret_file"})
	if err == nil && s.Empty() {
		err = fmt.Errorf("steering.rfc2136: no TSIG secret (set key_secret_file or $%s)", SecretEnv)
	}
	return s.Reveal(), err
}

// Source gives the current answer set of a service for a client region.
type Source interface {
	Answers(service, region string) *pick.Set
}

// Name is one published name and the answer set it mirrors.
type Name struct {
	FQDN, Service, Region string
}

// Names maps services and regions to published names: R.S per region, S for defaultRegion.
func Names(svcs, regions []string, defaultRegion string) []Name {
	var out []Name
	for _, s := range svcs {
		s = dns.CanonicalName(s)
		for _, r := range regions {
			n := strings.ToLower(r) + "." + s
			if r == defaultRegion {
				n = s
			}
			out = append(out, Name{FQDN: n, Service: s, Region: r})
		}
	}
	return out
}

// Publisher pushes changed answer sets.
type Publisher struct {
	services.Service
	cfg    Config
	src    Source
	secret string
	alg    string
	log    *slog.Logger

	mu    sync.Mutex
	names []Name          // what is published (SetNames)
	gone  map[string]bool // names no longer published whose records are still to be deleted

	pushed   map[string]string // name -> fingerprint of what the server has; Sync's only
	lastFull time.Time
	updates  *prometheus.CounterVec
}

// Deps are what the publisher publishes and reports to.
type Deps struct {
	Source Source // the weighted POPs of each service and region
	Names  []Name // what to publish (Names builds them)
	// Logger may be nil (discard).
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// New builds a publisher of d.Names from d.Source.
func New(cfg Config, d Deps) (*Publisher, error) {
	src, names, log, reg := d.Source, d.Names, d.Logger, d.Registerer
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	secret, err := cfg.secret()
	if err != nil {
		return nil, err
	}
	if err := cfg.check(names); err != nil {
		return nil, err
	}
	p := &Publisher{
		cfg: cfg, src: src, names: names, secret: secret, alg: dns.Fqdn(strings.ToLower(cfg.KeyAlgorithm)),
		log: log.With("component", "rfc2136", "server", cfg.Server), pushed: map[string]string{}, gone: map[string]bool{},
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_steering_rfc2136_updates_total", Help: "RFC 2136 updates sent, by result (ok, error).",
		}, []string{"result"}),
	}
	if err := reg.Register(p.updates); err != nil {
		return nil, fmt.Errorf("rfc2136 metrics: %w", err)
	}
	p.Service = services.NewTimerService(cfg.Interval, nil, func(ctx context.Context) error {
		if err := p.Sync(ctx); err != nil {
			p.log.Warn("rfc2136 update failed; will retry", "err", err)
		}
		return nil
	}, nil).WithName("rfc2136-publisher")
	return p, nil
}

// check reports every name that is not a domain name inside the zone, with the service
// and client region it comes from.
func (c *Config) check(names []Name) error {
	var errs []error
	for _, n := range names {
		if _, ok := dns.IsDomainName(n.FQDN); !ok || strings.ContainsAny(n.FQDN, " \\") || !dns.IsSubDomain(dns.CanonicalName(c.Zone), n.FQDN) {
			errs = append(errs, fmt.Errorf("steering.rfc2136: name %q (service %q, client region %q) is not a domain name inside zone %q", n.FQDN, n.Service, n.Region, c.Zone))
		}
	}
	return errors.Join(errs...)
}

// SetNames makes names what is published, for an inventory change: the next Sync creates
// the names that appear and deletes the A and AAAA records of those that disappear;
// the others are left alone (pushed only when their answer set changes, as before). A
// list with a bad name changes nothing: the error names each.
func (p *Publisher) SetNames(names []Name) error {
	if err := p.cfg.check(names); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := make(map[string]bool, len(names))
	for _, n := range names {
		keep[n.FQDN] = true
		delete(p.gone, n.FQDN) // back before its deletion was sent: the server still has it
	}
	for _, n := range p.names {
		if !keep[n.FQDN] {
			p.gone[n.FQDN] = true
		}
	}
	p.names = names
	return nil
}

// Sync deletes the names no longer published, pushes every name whose answer set
// differs from what was last pushed (every name when a resync is due) and returns the
// first error; failed names are retried on the next call.
func (p *Publisher) Sync(ctx context.Context) error {
	full := time.Since(p.lastFull) >= p.cfg.Resync
	p.mu.Lock()
	names, gone := p.names, slices.Sorted(maps.Keys(p.gone))
	p.mu.Unlock()
	var firstErr error
	for _, name := range gone {
		err := p.push(ctx, name, nil)
		p.count(err)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("delete %s: %w", name, err)
			}
			continue
		}
		// Deleted: should the name come back, it is pushed anew.
		delete(p.pushed, name)
		p.mu.Lock()
		delete(p.gone, name)
		p.mu.Unlock()
	}
	for _, n := range names {
		rrs := p.records(n)
		fp := fingerprint(rrs)
		if !full && p.pushed[n.FQDN] == fp {
			continue
		}
		err := p.push(ctx, n.FQDN, rrs)
		p.count(err)
		if err != nil {
			delete(p.pushed, n.FQDN)
			if firstErr == nil {
				firstErr = fmt.Errorf("update %s: %w", n.FQDN, err)
			}
			continue
		}
		p.pushed[n.FQDN] = fp
	}
	if full && firstErr == nil {
		p.lastFull = time.Now()
	}
	return firstErr
}

func (p *Publisher) count(err error) {
	if err != nil {
		p.updates.WithLabelValues("error").Inc()
	} else {
		p.updates.WithLabelValues("ok").Inc()
	}
}

func (p *Publisher) records(n Name) []dns.RR {
	var rrs []dns.RR
	set := p.src.Answers(n.Service, n.Region)
	if set == nil {
		return nil
	}
	for _, c := range set.Choices {
		for _, a := range c.V4 {
			rrs = append(rrs, &dns.A{Hdr: dns.RR_Header{Name: n.FQDN, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: p.cfg.TTL}, A: a.AsSlice()})
		}
		for _, a := range c.V6 {
			rrs = append(rrs, &dns.AAAA{Hdr: dns.RR_Header{Name: n.FQDN, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: p.cfg.TTL}, AAAA: a.AsSlice()})
		}
	}
	return rrs
}

func fingerprint(rrs []dns.RR) string {
	s := make([]string, len(rrs))
	for i, rr := range rrs {
		s[i] = rr.String()
	}
	slices.Sort(s)
	return strings.Join(s, "\n")
}

// push replaces the name's A and AAAA sets in one update, which the server applies
// atomically: resolvers never see the name empty in between.
func (p *Publisher) push(ctx context.Context, name string, rrs []dns.RR) error {
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(p.cfg.Zone))
	m.RemoveRRset([]dns.RR{
		&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA}},
		&dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA}},
	})
	if len(rrs) > 0 {
		m.Insert(rrs)
	}
	m.SetTsig(dns.Fqdn(p.cfg.KeyName), p.alg, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: p.cfg.Timeout, TsigSecret: map[string]string{dns.Fqdn(p.cfg.KeyName): p.secret}}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, p.cfg.Server)
	if r != nil && r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("server answered %s", dns.RcodeToString[r.Rcode])
	}
	if err != nil {
		return err
	}
	return nil
}
