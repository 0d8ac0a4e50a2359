// Package zone is the first step of the GeoDNS answer chain: it decides what a query
// name is inside the one zone Meridian is authoritative for, and holds the zone's SOA
// and NS records for the answers that do not depend on the client.
package zone

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Config is the zone's identity.
type Config struct {
	Origin      string       `yaml:"origin"`       // e.g. example.net.
	NS          []string     `yaml:"ns"`           // name servers; default ns1.<origin>
	NSAddrs     []netip.Addr `yaml:"ns_addrs"`     // glue for in-zone name servers
	Hostmaster  string       `yaml:"hostmaster"`   // SOA RNAME; default hostmaster.<origin>
	NegativeTTL uint32       `yaml:"negative_ttl"` // SOA minimum: how long NXDOMAIN/NODATA are cached
}

// RegisterFlags registers the zone flags under prefix (e.g. "steering.dns.").
func (c *Config) RegisterFlags(prefix string, f *flag.FlagSet) {
	f.StringVar(&c.Origin, prefix+"zone", "", "Zone the built-in GeoDNS is authoritative for, e.g. example.net.")
	f.Func(prefix+"ns", "Name server of the zone (repeatable); default ns1.<zone>.", func(s string) error {
		c.NS = append(c.NS, s)
		return nil
	})
	f.Func(prefix+"ns-addr", "Glue address of in-zone name servers (repeatable).", func(s string) error {
		a, err := netip.ParseAddr(s)
		c.NSAddrs = append(c.NSAddrs, a)
		return err
	})
	f.StringVar(&c.Hostmaster, prefix+"hostmaster", "", "SOA RNAME; default hostmaster.<zone>.")
	f.Var(uint32Value{&c.NegativeTTL}, prefix+"negative-ttl", "TTL of negative answers (SOA minimum), seconds.")
	c.NegativeTTL = 30
}

type uint32Value struct{ p *uint32 }

func (v uint32Value) String() string {
	if v.p == nil {
		return "0"
	}
	return fmt.Sprint(*v.p)
}
func (v uint32Value) Set(s string) error {
	var n uint32
	_, err := fmt.Sscan(s, &n)
	*v.p = n
	return err
}

// Kind is what a name is in the zone.
type Kind uint8

const (
	Outside  Kind = iota // not in the zone: REFUSED
	Apex                 // SOA and NS live here
	Service              // a steered service name
	NSHost               // an in-zone name server with glue
	Empty                // exists only as an ancestor of other names: NODATA
	NXDomain             // in the zone, does not exist
)

// Zone is immutable after New and safe for concurrent use. An inventory change makes a
// new one (WithServices).
type Zone struct {
	cfg    Config
	origin string
	soa    *dns.SOA
	negSOA dns.RR
	ns     []dns.RR
	glue   []netip.Addr
	names  map[string]Kind
}

// New builds the zone from its config and the service names it steers (see
// WithServices).
func New(c Config, services []string) (*Zone, error) {
	if c.Origin == "" {
		return nil, fmt.Errorf("zone: origin is empty")
	}
	if _, ok := dns.IsDomainName(c.Origin); !ok {
		return nil, fmt.Errorf("zone: origin %q is not a domain name", c.Origin)
	}
	// The serial only has to grow between restarts: answers are computed, not loaded.
	return build(c, services, uint32(time.Now().Unix()))
}

// WithServices returns the zone with another set of service names, for an inventory
// change; z is left as it was. The serial grows, so that it stays a version of the
// zone's contents. Every bad name is reported: one that is not a host name (labels of
// letters, digits, '-' and '_'), one outside the zone, and one on the apex or on a name
// server (their records would be lost).
func (z *Zone) WithServices(services []string) (*Zone, error) {
	return build(z.cfg, services, max(uint32(time.Now().Unix()), z.soa.Serial+1))
}

func build(c Config, services []string, serial uint32) (*Zone, error) {
	origin := dns.CanonicalName(c.Origin)
	z := &Zone{cfg: c, origin: origin, names: map[string]Kind{origin: Apex}, glue: c.NSAddrs}
	ns := c.NS
	if len(ns) == 0 {
		ns = []string{"ns1." + origin}
	}
	rname := c.Hostmaster
	if rname == "" {
		rname = "hostmaster." + origin
	}
	z.soa = &dns.SOA{
		Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
		Ns:  dns.CanonicalName(ns[0]), Mbox: dns.CanonicalName(rname),
		Serial: serial, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: c.NegativeTTL,
	}
	neg := *z.soa
	neg.Hdr.Ttl = min(neg.Hdr.Ttl, neg.Minttl)
	z.negSOA = &neg
	for _, n := range ns {
		n = dns.CanonicalName(n)
		z.ns = append(z.ns, &dns.NS{Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 3600}, Ns: n})
		if dns.IsSubDomain(origin, n) && len(c.NSAddrs) > 0 {
			z.add(n, NSHost)
		}
	}
	var errs []error
	for _, s := range services {
		name := dns.CanonicalName(s)
		switch {
		case !isHostName(s):
			errs = append(errs, fmt.Errorf("zone: service %q is not a valid DNS name (labels of 1-63 letters, digits, '-' or '_', at most 253 bytes)", s))
		case !dns.IsSubDomain(origin, name):
			errs = append(errs, fmt.Errorf("zone: service %q is outside zone %q", s, origin))
		case z.names[name] == Apex || z.names[name] == NSHost:
			errs = append(errs, fmt.Errorf("zone: service %q is the zone's apex or a name server", s))
		default:
			z.add(name, Service)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return z, nil
}

// isHostName reports whether s is a name of ordinary labels: what a service clients
// resolve can be called, with no escapes or characters a zone file would need quoted.
func isHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || strings.ContainsFunc(l, func(r rune) bool {
			return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_')
		}) {
			return false
		}
	}
	return true
}

// add registers a name and marks its ancestors up to the apex as empty non-terminals,
// so that they answer NODATA rather than NXDOMAIN (RFC 8020).
func (z *Zone) add(name string, k Kind) {
	z.names[name] = k
	for n := name; n != z.origin; {
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
		if _, ok := z.names[n]; !ok {
			z.names[n] = Empty
		}
	}
}

// Origin is the zone apex, lower case and fully qualified.
func (z *Zone) Origin() string { return z.origin }

// Lookup classifies a query name and returns its canonical (lower-case) form.
func (z *Zone) Lookup(qname string) (string, Kind) {
	name := lower(qname)
	if k, ok := z.names[name]; ok {
		return name, k
	}
	if !dns.IsSubDomain(z.origin, name) {
		return name, Outside
	}
	// Below a name that exists, nothing else does: NXDOMAIN either way.
	return name, NXDomain
}

// SOA is the zone's SOA record.
func (z *Zone) SOA() *dns.SOA { return z.soa }

// NegativeSOA is the SOA for the authority section of NXDOMAIN and NODATA answers, its
// TTL capped at the negative TTL (RFC 2308).
func (z *Zone) NegativeSOA() dns.RR { return z.negSOA }

// Glue is the address set of every in-zone name server.
func (z *Zone) Glue() []netip.Addr { return z.glue }

// NS returns the apex NS records.
func (z *Zone) NS() []dns.RR { return z.ns }

// lower folds ASCII case and makes the name fully qualified, allocating only when the
// name needs it (most resolvers send lower case; 0x20-randomising ones do not).
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return dns.CanonicalName(s)
		}
	}
	return dns.Fqdn(s)
}
