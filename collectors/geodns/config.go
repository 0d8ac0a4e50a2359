package geodns

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Vantage is a site probes are sent from. SourceAddress is the local address they leave
// from, so that one collector can stand for several vantages (or pick the uplink of a
// multi-homed host); empty lets the kernel choose.
type Vantage struct {
	Site          string `yaml:"site"`
	SourceAddress string `yaml:"source_address"`
}

// Vantages is a flag.Value: "site[=address],...".
type Vantages []Vantage

func (v *Vantages) String() string {
	parts := make([]string, len(*v))
	for i, x := range *v {
		parts[i] = x.Site
		if x.SourceAddress != "" {
			parts[i] += "=" + x.SourceAddress
		}
	}
	return strings.Join(parts, ",")
}

func (v *Vantages) Set(s string) error {
	*v = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		site, addr, _ := strings.Cut(part, "=")
		*v = append(*v, Vantage{Site: site, SourceAddress: addr})
	}
	return nil
}

// Config is the probe set of the vantages this collector runs.
type Config struct {
	Vantages     Vantages      `yaml:"vantages"`      // inventory sites this collector probes from; none: no probes
	Interval     time.Duration `yaml:"interval"`      // default for every probe kind
	DNSInterval  time.Duration `yaml:"dns_interval"`  // 0: Interval
	TCPInterval  time.Duration `yaml:"tcp_interval"`  // 0: Interval
	HTTPInterval time.Duration `yaml:"http_interval"` // 0: Interval
	ICMPInterval time.Duration `yaml:"icmp_interval"` // 0: Interval
	Jitter       float64       `yaml:"jitter"`        // fraction of the interval, spreads probes of many vantages
	FastInterval time.Duration `yaml:"fast_interval"` // after a first failure, the next probe comes this soon; 0: off
	Timeout      time.Duration `yaml:"timeout"`       // per probe
	DNSServer    string        `yaml:"dns_server"`    // host:port of the authoritative GeoDNS; "" disables DNS probes
	ICMP         bool          `yaml:"icmp"`          // try ICMP echo (needs root or ping_group_range)
}

// RegisterFlags registers the probe flags with the "geodns." prefix and sets defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.Var(&c.Vantages, "geodns.vantages", "Inventory sites this collector probes from, as site[=source address], comma separated (e.g. paris or paris=192.0.2.7); empty: no probes.")
	f.DurationVar(&c.Interval, "geodns.interval", time.Second, "Default probe interval.")
	f.DurationVar(&c.DNSInterval, "geodns.dns-interval", 0, "DNS probe interval (0: -geodns.interval).")
	f.DurationVar(&c.TCPInterval, "geodns.tcp-interval", 0, "TCP connect probe interval (0: -geodns.interval).")
	f.DurationVar(&c.HTTPInterval, "geodns.http-interval", 0, "HTTP(S) probe interval (0: -geodns.interval).")
	f.DurationVar(&c.ICMPInterval, "geodns.icmp-interval", 0, "ICMP echo probe interval (0: -geodns.interval).")
	f.Float64Var(&c.Jitter, "geodns.jitter", 0.2, "Random spread of each interval, as a fraction of it.")
	f.DurationVar(&c.FastInterval, "geodns.fast-interval", 500*time.Millisecond, "After a probe fails where the one before succeeded, probe again this soon, to confirm or clear the failure quickly (HAProxy's fastinter); 0: off.")
	f.DurationVar(&c.Timeout, "geodns.timeout", 800*time.Millisecond, "Timeout of one probe.")
	f.StringVar(&c.DNSServer, "geodns.dns-server", "", "host:port of the authoritative GeoDNS to query with EDNS Client Subnet; empty disables DNS probes.")
	f.BoolVar(&c.ICMP, "geodns.icmp", true, "Send ICMP echo probes where the process may (root or net.ipv4.ping_group_range).")
}

// Validate names the offending field.
func (c *Config) Validate() error {
	seen := map[string]bool{}
	for i, v := range c.Vantages {
		if v.Site == "" {
			return fmt.Errorf("geodns.vantages[%d].site: empty", i)
		}
		if seen[v.Site] {
			return fmt.Errorf("geodns.vantages[%d].site: duplicate vantage %q", i, v.Site)
		}
		seen[v.Site] = true
		if v.SourceAddress != "" {
			if _, err := netip.ParseAddr(v.SourceAddress); err != nil {
				return fmt.Errorf("geodns.vantages[%d].source_address: %w", i, err)
			}
		}
	}
	if c.Interval <= 0 {
		return fmt.Errorf("geodns.interval: must be > 0, got %s", c.Interval)
	}
	for name, d := range map[string]time.Duration{"dns_interval": c.DNSInterval, "tcp_interval": c.TCPInterval, "http_interval": c.HTTPInterval, "icmp_interval": c.ICMPInterval} {
		if d < 0 {
			return fmt.Errorf("geodns.%s: must be >= 0, got %s", name, d)
		}
	}
	if c.Jitter < 0 || c.Jitter >= 1 {
		return fmt.Errorf("geodns.jitter: must be in [0,1), got %v", c.Jitter)
	}
	if c.FastInterval < 0 {
		return fmt.Errorf("geodns.fast_interval: must be >= 0, got %s", c.FastInterval)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("geodns.timeout: must be > 0, got %s", c.Timeout)
	}
	if c.DNSServer != "" {
		if _, _, err := net.SplitHostPort(c.DNSServer); err != nil {
			return fmt.Errorf("geodns.dns_server: %w", err)
		}
	}
	return nil
}

func (c *Config) every(d time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return c.Interval
}
