package hubble

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	dstls "github.com/grafana/dskit/crypto/tls"
	"github.com/grafana/dskit/flagext"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// Config is the hubble collector's section of the config file (flags: -hubble.*).
type Config struct {
	Relays []RelayConfig `yaml:"relays"`
	// RelayFlag holds -hubble.relays (cluster=host:port,...): plaintext relays, or TLS
	// ones when -hubble.tls-enabled is set; merged into Relays by Validate.
	RelayFlag  flagext.StringSliceCSV `yaml:"-"`
	TLSEnabled bool                   `yaml:"tls_enabled"`
	TLS        dstls.ClientConfig     `yaml:",inline"`

	FlowSampleRate float64 `yaml:"flow_sample_rate"`
	// Overload is what a relay's stream does when flows arrive faster than they are
	// stored: "backpressure" slows the relay down (gRPC flow control; Hubble then drops
	// and reports lost events), "sample" keeps every flow in the edges and stores only
	// OverloadSampleRate of the raw flows until the collector catches up.
	Overload           string        `yaml:"overload"`
	OverloadSampleRate float64       `yaml:"overload_sample_rate"`
	EdgeInterval       time.Duration `yaml:"edge_interval"`
	EdgeGrace          time.Duration `yaml:"edge_grace"`
	MaxPairs           int           `yaml:"max_pairs"`
	MaxWindows         int           `yaml:"max_windows"`
	Backfill           uint64        `yaml:"backfill"`
	StateDir           string        `yaml:"state_dir"` // where each relay's resume point waits for the next start; "" = none
	ConnectTimeout     time.Duration `yaml:"connect_timeout"`
	BatchSize          int           `yaml:"batch_size"`
	FlushInterval      time.Duration `yaml:"flush_interval"`
	LabelKeys          []string      `yaml:"label_keys"`
	BackoffMin         time.Duration `yaml:"backoff_min_period"`
	BackoffMax         time.Duration `yaml:"backoff_max_period"`
}

// Overload modes.
const (
	OverloadBackpressure = "backpressure"
	OverloadSample       = "sample"
)

// RelayConfig is one Hubble Relay (one per cluster). TLS fields left empty inherit the
// top-level ones.
type RelayConfig struct {
	Name       string             `yaml:"name"` // defaults to Cluster
	Cluster    string             `yaml:"cluster"`
	Address    string             `yaml:"address"` // host:port
	TLSEnabled *bool              `yaml:"tls_enabled"`
	TLS        dstls.ClientConfig `yaml:",inline"`
	// Whitelist and Blacklist are observer.FlowFilter lists, in the protobuf JSON field
	// names (e.g. `- source_pod: ["bookinfo/"]`), applied by the relay.
	Whitelist Filters `yaml:"whitelist"`
	Blacklist Filters `yaml:"blacklist"`
}

// Filters are Hubble flow filters written in YAML.
type Filters []*flowpb.FlowFilter

// UnmarshalYAML reads each filter through protojson, so every FlowFilter field Cilium
// knows is accepted and a misspelt one is an error naming the line.
func (fs *Filters) UnmarshalYAML(n *yaml.Node) error {
	var raw []any
	if err := n.Decode(&raw); err != nil {
		return err
	}
	for i, r := range raw {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("line %d: filter %d: %w", n.Line, i, err)
		}
		f := &flowpb.FlowFilter{}
		if err := protojson.Unmarshal(b, f); err != nil {
			return fmt.Errorf("line %d: filter %d: %w", n.Line, i, err)
		}
		*fs = append(*fs, f)
	}
	return nil
}

// RegisterFlags registers -hubble.* flags and sets the defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.Var(&c.RelayFlag, "hubble.relays", "Hubble Relays to stream flows from, as cluster=host:port,... (per-relay TLS and filters: YAML)")
	f.BoolVar(&c.TLSEnabled, "hubble.tls-enabled", false, "Connect to the relays with TLS (mTLS when a client certificate is set).")
	c.TLS.RegisterFlagsWithPrefix("hubble", f)
	f.Float64Var(&c.FlowSampleRate, "hubble.flow-sample-rate", 1, "Fraction of raw flows stored (0..1); edges always count every flow.")
	f.StringVar(&c.Overload, "hubble.overload", OverloadBackpressure, "When flows arrive faster than they are stored: backpressure (slow the relay's stream) or sample (store overload_sample_rate of the raw flows; edges count all).")
	f.Float64Var(&c.OverloadSampleRate, "hubble.overload-sample-rate", 0.1, "Fraction of raw flows stored while overloaded, with overload: sample (0..1).")
	f.DurationVar(&c.EdgeInterval, "hubble.edge-interval", time.Second, "Aggregation interval of workload edges.")
	f.DurationVar(&c.EdgeGrace, "hubble.edge-grace", 2*time.Second, "How long after its end an edge interval still takes late flows.")
	f.IntVar(&c.MaxPairs, "hubble.max-pairs", 10000, "Distinct workload pairs per relay and interval; more go to the \"other\" edge.")
	f.IntVar(&c.MaxWindows, "hubble.max-windows", 8, "Open edge intervals per relay; more emit the oldest early.")
	f.Uint64Var(&c.Backfill, "hubble.backfill", 4095, "Flows asked for from the relay's buffer on the first connection (0: only new flows).")
	f.StringVar(&c.StateDir, "hubble.state-dir", "data/hubble", "Directory where each relay's resume point is kept from a stop to the next start (empty: start from backfill).")
	f.DurationVar(&c.ConnectTimeout, "hubble.connect-timeout", 10*time.Second, "Time allowed to connect to a relay before retrying.")
	f.IntVar(&c.BatchSize, "hubble.batch-size", 2048, "Records per append to the pipeline.")
	f.DurationVar(&c.FlushInterval, "hubble.flush-interval", time.Second, "Longest time records wait before being appended.")
	f.DurationVar(&c.BackoffMin, "hubble.backoff-min-period", 100*time.Millisecond, "First delay before reconnecting to a relay; doubles per failure.")
	f.DurationVar(&c.BackoffMax, "hubble.backoff-max-period", 30*time.Second, "Longest delay between reconnections (retries never stop).")
}

// Validate checks the config and merges -hubble.relays into Relays.
func (c *Config) Validate() error {
	for _, r := range c.RelayFlag {
		cluster, addr, ok := strings.Cut(r, "=")
		if !ok || cluster == "" || addr == "" {
			return fmt.Errorf("hubble.relays: %q is not cluster=host:port", r)
		}
		c.Relays = append(c.Relays, RelayConfig{Cluster: cluster, Address: addr})
	}
	c.RelayFlag = nil
	names := map[string]bool{}
	for i := range c.Relays {
		r := &c.Relays[i]
		if r.Name == "" {
			r.Name = r.Cluster
		}
		switch {
		case r.Cluster == "":
			return fmt.Errorf("hubble.relays[%d].cluster: empty", i)
		case r.Address == "":
			return fmt.Errorf("hubble.relays[%d].address: empty", i)
		case names[r.Name]:
			return fmt.Errorf("hubble.relays[%d].name: %q used twice", i, r.Name)
		}
		names[r.Name] = true
	}
	switch {
	case c.FlowSampleRate < 0 || c.FlowSampleRate > 1:
		return fmt.Errorf("hubble.flow_sample_rate: %v not in [0, 1]", c.FlowSampleRate)
	case c.Overload != OverloadBackpressure && c.Overload != OverloadSample:
		return fmt.Errorf("hubble.overload: %q is neither %q nor %q", c.Overload, OverloadBackpressure, OverloadSample)
	case c.OverloadSampleRate < 0 || c.OverloadSampleRate > 1:
		return fmt.Errorf("hubble.overload_sample_rate: %v not in [0, 1]", c.OverloadSampleRate)
	case c.EdgeInterval <= 0:
		return errors.New("hubble.edge_interval: must be positive")
	case c.EdgeGrace < 0:
		return errors.New("hubble.edge_grace: must not be negative")
	case c.MaxPairs < 1:
		return errors.New("hubble.max_pairs: must be at least 1")
	case c.MaxWindows < 1:
		return errors.New("hubble.max_windows: must be at least 1")
	case c.ConnectTimeout <= 0:
		return errors.New("hubble.connect_timeout: must be positive")
	case c.BatchSize < 1:
		return errors.New("hubble.batch_size: must be at least 1")
	case c.FlushInterval <= 0:
		return errors.New("hubble.flush_interval: must be positive")
	case c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin:
		return errors.New("hubble.backoff: min_period must be positive and max_period at least min_period")
	}
	return nil
}

// tls returns the relay's TLS settings, inheriting the top-level ones it leaves empty.
func (c *Config) tls(r RelayConfig) (bool, dstls.ClientConfig) {
	enabled := c.TLSEnabled
	if r.TLSEnabled != nil {
		enabled = *r.TLSEnabled
	}
	t := r.TLS
	if t == (dstls.ClientConfig{}) {
		t = c.TLS
	}
	return enabled, t
}
