// Package authdns is Meridian's built-in authoritative GeoDNS server. Each query passes
// one short chain, read top to bottom in Answer:
//
//	zone   (steering/zone)   is the name ours, and what is it?
//	locate (steering/locate) which client region asks (ECS, else source address)?
//	policy (Policy)          which POPs may answer that region now, with what weight?
//	pick   (steering/pick)   one POP, at random in proportion to its weight.
package authdns

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/grafana/dskit/services"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"

	"github.com/meridianhq/meridian/steering/locate"
	"github.com/meridianhq/meridian/steering/pick"
	"github.com/meridianhq/meridian/steering/zone"
)

// Policy is the chain's policy step: the weighted POP set serving a service for a
// client region. steering.Engine implements it.
type Policy interface {
	Answers(service, region string) *pick.Set
}

// Config is the server's listener and answer settings.
type Config struct {
	Listen       string      `yaml:"listen"`              // UDP and TCP, host:port
	TTL          uint32      `yaml:"ttl"`                 // TTL of steered A/AAAA answers
	GeoIPDB      string      `yaml:"geoip_db"`            // MaxMind City or Country database; "" = CIDR rules only
	UDPListeners int         `yaml:"udp_listeners"`       // SO_REUSEPORT sockets; 0 = one per CPU
	MaxTCPConns  int         `yaml:"max_tcp_connections"` // open TCP connections served at once
	Zone         zone.Config `yaml:"zone"`
}

// RegisterFlags registers the server flags under prefix (e.g. "steering.dns.").
func (c *Config) RegisterFlags(prefix string, f *flag.FlagSet) {
	f.StringVar(&c.Listen, prefix+"listen", "", "UDP and TCP address of the built-in authoritative GeoDNS, e.g. 127.0.0.1:5353 (needs -steering.dns.zone); empty: off.")
	f.Func(prefix+"ttl", "TTL of steered answers in seconds (default 30).", func(s string) error {
		_, err := fmt.Sscan(s, &c.TTL)
		return err
	})
	c.TTL = 30
	f.StringVar(&c.GeoIPDB, prefix+"geoip-db", "", "MaxMind (GeoIP2/GeoLite2 City or Country) database mapping clients to countries.")
	f.IntVar(&c.UDPListeners, prefix+"udp-listeners", 0, "UDP sockets sharing the port (SO_REUSEPORT); 0 = one per CPU.")
	f.IntVar(&c.MaxTCPConns, prefix+"max-tcp-connections", 256, "TCP connections served at once; more wait in the kernel's accept queue. Idle ones close after 2 s before a first query, 8 s between queries.")
	c.Zone.RegisterFlags(prefix, f)
}

// Validate names the offending field.
func (c *Config) Validate() error {
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("steering.dns.listen: %w", err)
		}
	}
	if c.Zone.Origin == "" {
		return fmt.Errorf("steering.dns.zone.origin: required while steering.dns.listen is set (set listen empty to disable the built-in GeoDNS)")
	}
	if c.UDPListeners < 0 {
		return fmt.Errorf("steering.dns.udp_listeners: must be >= 0")
	}
	if c.MaxTCPConns < 1 {
		return fmt.Errorf("steering.dns.max_tcp_connections: must be >= 1, got %d", c.MaxTCPConns)
	}
	return nil
}

// Server answers queries for one zone over UDP and TCP.
type Server struct {
	services.Service
	cfg    Config
	table  atomic.Pointer[Table] // swapped whole on an inventory change (Swap)
	policy Policy
	log    *slog.Logger

	queries *prometheus.CounterVec
	invalid prometheus.Counter
	ignored prometheus.Counter
	unsent  prometheus.Counter
	rcodes  [dns.RcodeBadCookie + 1]prometheus.Counter // resolved once: the hot path must not hash labels

	udp  []*udpSocket
	tcp  *dns.Server
	wg   sync.WaitGroup
	addr net.Addr // set before the service is Running
}

// Table is what the chain's first two steps answer from: the zone's names and the
// locator's client regions, made from one inventory version. Immutable.
type Table struct {
	Zone    *zone.Zone
	Locator *locate.Locator // the client's region
}

// Deps are what the server answers from and reports to.
type Deps struct {
	Table  Table  // the first table; Swap replaces it
	Policy Policy // the region's weighted POPs
	// Logger may be nil (discard).
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// New builds the server; it listens when started as a service.
func New(cfg Config, d Deps) (*Server, error) {
	log, reg := d.Logger, d.Registerer
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, policy: d.Policy, log: log.With("component", "authdns"),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_steering_dns_responses_total", Help: "Responses sent by the built-in GeoDNS, by rcode.",
		}, []string{"rcode"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_steering_dns_invalid_requests_total", Help: "Requests that could not be parsed or that break the accept rules (answered FORMERR when the header was readable, else dropped).",
		}),
		ignored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_steering_dns_dropped_responses_total", Help: "Messages received with the response (QR) bit set, dropped unanswered: answering could loop or amplify.",
		}),
		unsent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_steering_dns_udp_unsent_responses_total", Help: "UDP responses dropped because the socket's send buffer was full or the send failed.",
		}),
	}
	for _, c := range []prometheus.Collector{s.queries, s.invalid, s.ignored, s.unsent} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("authdns metrics: %w", err)
		}
	}
	for rc := range s.rcodes {
		if name, ok := dns.RcodeToString[rc]; ok {
			s.rcodes[rc] = s.queries.WithLabelValues(name)
		}
	}
	// 16 is BADSIG in a TSIG record and BADVERS in an OPT (RFC 6891); miekg/dns names it
	// BADSIG. This server signs nothing: its 16 is always BADVERS.
	s.rcodes[dns.RcodeBadVers] = s.queries.WithLabelValues("BADVERS")
	s.table.Store(&d.Table)
	s.Service = services.NewIdleService(s.start, s.stop).WithName("authdns")
	return s, nil
}

// Swap makes t the table every query from now on is answered from. A query in flight
// finishes with the table it started with, so each answer reads one inventory version.
func (s *Server) Swap(t Table) { s.table.Store(&t) }

// Table is the table queries are answered from now.
func (s *Server) Table() Table { return *s.table.Load() }

// Addr is the bound address once the service runs (useful with port 0).
func (s *Server) Addr() net.Addr { return s.addr }

func (s *Server) start(context.Context) error {
	n := s.cfg.UDPListeners
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	_, port, _ := net.SplitHostPort(s.cfg.Listen)
	for attempt := 1; ; attempt++ {
		err := s.listen(n)
		// With port 0 the UDP socket picks the port and TCP takes the same number, which
		// another process's TCP connection may already hold: pick again.
		if err == nil || port != "0" || !errors.Is(err, syscall.EADDRINUSE) || attempt == 5 {
			return err
		}
	}
}

// listen opens n UDP sockets and the TCP listener on one port and starts their readers;
// on failure it leaves nothing open.
func (s *Server) listen(n int) error {
	addr := s.cfg.Listen
	for len(s.udp) < n {
		u, bound, err := listenUDP(addr)
		if err != nil {
			s.stop(nil)
			return fmt.Errorf("authdns listen udp %s: %w", addr, err)
		}
		// Port 0 resolves once; the other sockets and TCP share the port that came out.
		s.addr, addr = bound, bound.String()
		s.udp = append(s.udp, u)
		// One reader per socket: with the fast path a batch is answered in microseconds,
		// and a second reader only adds hand-offs and wake-ups (measured: ~25% more CPU
		// per query under dnsperf). SO_REUSEPORT spreads clients over the sockets.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveUDP(u)
		}()
	}
	tl, err := net.Listen("tcp", addr)
	if err != nil {
		s.stop(nil)
		return fmt.Errorf("authdns listen tcp %s: %w", addr, err)
	}
	// Bounded: each connection holds a goroutine and buffers, and a client may open many
	// and send nothing. dns.Server closes idle ones (ReadTimeout, IdleTimeout).
	s.tcp = &dns.Server{Listener: netutil.LimitListener(tl, s.cfg.MaxTCPConns), Net: "tcp", Handler: s, MsgAcceptFunc: s.acceptTCP, MsgInvalidFunc: s.invalidTCP}
	started := make(chan error, 1)
	s.tcp.NotifyStartedFunc = func() { started <- nil }
	go func() {
		if err := s.tcp.ActivateAndServe(); err != nil {
			started <- err
		}
	}()
	if err := <-started; err != nil {
		tl.Close()
		s.tcp = nil
		s.stop(nil)
		return fmt.Errorf("authdns serve tcp %s: %w", addr, err)
	}
	s.log.Info("authoritative GeoDNS listening", "addr", addr, "zone", s.table.Load().Zone.Origin(), "udp_sockets", n)
	return nil
}

func (s *Server) stop(error) error {
	var errs []error
	for _, u := range s.udp {
		u.stop()
	}
	if s.tcp != nil {
		errs = append(errs, s.tcp.Shutdown())
	}
	s.wg.Wait()
	for _, u := range s.udp {
		errs = append(errs, unix.Close(u.fd)) // after the readers are gone: a closed number may be reused at once
	}
	s.udp = nil // a second stop must not close numbers that may belong to others by now
	return errors.Join(errs...)
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	var src netip.Addr
	udp := false
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		src, _ = netip.AddrFromSlice(a.IP)
		udp = true
	case *net.TCPAddr:
		src, _ = netip.AddrFromSlice(a.IP)
	}
	if resp := s.count(s.Answer(req, src, udp)); resp != nil {
		w.WriteMsg(resp)
	}
}
