package geodns

import (
	"flag"
	"fmt"
	"net"
	"time"
)

// Config is one vantage's probe set.
type Config struct {
	Vantage      string        `yaml:"vantage"`       // inventory site this collector probes from
	Interval     time.Duration `yaml:"interval"`      // default for every probe kind
	DNSInterval  time.Duration `yaml:"dns_interval"`  // 0: Interval
	TCPInterval  time.Duration `yaml:"tcp_interval"`  // 0: Interval
	HTTPInterval time.Duration `yaml:"http_interval"` // 0: Interval
	ICMPInterval time.Duration `yaml:"icmp_interval"` // 0: Interval
	Jitter       float64       `yaml:"jitter"`        // fraction of the interval, spreads probes of many vantages
	Timeout      time.Duration `yaml:"timeout"`       // per probe
	DNSServer    string        `yaml:"dns_server"`    // host:port of the authoritative GeoDNS; "" disables DNS probes
	ICMP         bool          `yaml:"icmp"`          // try ICMP echo (needs root or ping_group_range)
}

// RegisterFlags registers the probe flags with the "geodns." prefix and sets defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.Vantage, "geodns.vantage", "", "Inventory site this collector probes from.")
	f.DurationVar(&c.Interval, "geodns.interval", time.Second, "Default probe interval.")
	f.DurationVar(&c.DNSInterval, "geodns.dns-interval", 0, "DNS probe interval (0: -geodns.interval).")
	f.DurationVar(&c.TCPInterval, "geodns.tcp-interval", 0, "TCP connect probe interval (0: -geodns.interval).")
	f.DurationVar(&c.HTTPInterval, "geodns.http-interval", 0, "HTTP(S) probe interval (0: -geodns.interval).")
	f.DurationVar(&c.ICMPInterval, "geodns.icmp-interval", 0, "ICMP echo probe interval (0: -geodns.interval).")
	f.Float64Var(&c.Jitter, "geodns.jitter", 0.2, "Random spread of each interval, as a fraction of it.")
	f.DurationVar(&c.Timeout, "geodns.timeout", 800*time.Millisecond, "Timeout of one probe.")
	f.StringVar(&c.DNSServer, "geodns.dns-server", "", "host:port of the authoritative GeoDNS to query with EDNS Client Subnet; empty disables DNS probes.")
	f.BoolVar(&c.ICMP, "geodns.icmp", true, "Send ICMP echo probes where the process may (root or net.ipv4.ping_group_range).")
}

// Validate names the offending field.
func (c *Config) Validate() error {
	if c.Vantage == "" {
		return fmt.Errorf("geodns.vantage: required")
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
