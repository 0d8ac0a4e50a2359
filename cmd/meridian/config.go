package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/grafana/dskit/flagext"

	"github.com/meridianhq/meridian/alerts/ruler"
	"github.com/meridianhq/meridian/collectors/ceph"
	"github.com/meridianhq/meridian/collectors/geodns"
	"github.com/meridianhq/meridian/collectors/hubble"
	"github.com/meridianhq/meridian/collectors/shard"
	"github.com/meridianhq/meridian/collectors/wireguard"
	"github.com/meridianhq/meridian/dashboards/chhttp"
	"github.com/meridianhq/meridian/internal/configfile"
	"github.com/meridianhq/meridian/internal/tracing"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/server"
	"github.com/meridianhq/meridian/steering"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/topomap"
)

// Config is Meridian's one configuration tree. Each component registers its own flags
// with a prefix; the YAML file uses the same field names (see `meridian -help`).
type Config struct {
	Target    flagext.StringSliceCSV `yaml:"target"`
	LogLevel  string                 `yaml:"log_level"`
	LogFormat string                 `yaml:"log_format"`

	Server         server.Config    `yaml:"server"`
	Tracing        tracing.Config   `yaml:"tracing"`
	Storage        storage.Config   `yaml:"storage"`
	Pipeline       pipeline.Config  `yaml:"pipeline"`
	CollectorRing  shard.Config     `yaml:"collector_ring"`
	WireGuard      wireguard.Config `yaml:"wireguard"`
	Ceph           ceph.Config      `yaml:"ceph"`
	Hubble         hubble.Config    `yaml:"hubble"`
	Probes         geodns.Config    `yaml:"geodns"`
	Ruler          ruler.Config     `yaml:"ruler"`
	Steering       steering.Config  `yaml:"steering"`
	Topomap        topomap.Config   `yaml:"topomap"`
	ClickHouseHTTP chhttp.Config    `yaml:"clickhouse_http"`

	Inventory inventory.Inventory `yaml:"inventory"`

	// File is -config.file; ReloadInterval is how often it, and the rule sources it
	// names, are checked for changes (reload.go). Flags only.
	File           string        `yaml:"-"`
	ReloadInterval time.Duration `yaml:"-"`
}

// RegisterFlags registers every component's flags on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	c.Target = []string{All}
	f.Var(&c.Target, "target", "Comma-separated modules to run: "+strings.Join(targets, ", ")+".")
	f.StringVar(&c.LogLevel, "log.level", "info", "Log level: debug, info, warn, error.")
	f.StringVar(&c.LogFormat, "log.format", "logfmt", "Log format: logfmt or json.")
	c.Server.RegisterFlags(f)
	c.Tracing.RegisterFlags(f)
	c.Storage.RegisterFlags(f)
	c.Pipeline.RegisterFlags(f)
	c.CollectorRing.RegisterFlags(f)
	c.WireGuard.RegisterFlags(f)
	c.Ceph.RegisterFlags(f)
	c.Hubble.RegisterFlags(f)
	c.Probes.RegisterFlags(f)
	c.Ruler.RegisterFlags(f)
	c.Steering.RegisterFlags(f)
	c.Topomap.RegisterFlags(f)
	c.ClickHouseHTTP.RegisterFlags(f)
	f.StringVar(&c.File, "config.file", "", "YAML configuration file; flags given on the command line override it.")
	f.DurationVar(&c.ReloadInterval, "config.reload-interval", 10*time.Second, "How often -config.file and the ruler's spec, window and rule files are checked and, when changed, reloaded; 0 = only on SIGHUP or POST /-/reload.")
}

// Validate checks the tree; errors name the field.
func (c *Config) Validate() error {
	for _, t := range c.Target {
		if !isTarget(t) {
			return fmt.Errorf("target: unknown module %q (valid: %s)", t, strings.Join(targets, ", "))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.LogFormat != "logfmt" && c.LogFormat != "json" {
		return fmt.Errorf("log_format: %q is not logfmt or json", c.LogFormat)
	}
	if c.ReloadInterval < 0 {
		return errors.New("-config.reload-interval: must be >= 0")
	}
	for _, v := range []interface{ Validate() error }{&c.Server, &c.Storage, &c.Pipeline, &c.CollectorRing, &c.WireGuard, &c.Ceph, &c.Hubble, &c.Probes, &c.Ruler, &c.Steering, &c.Topomap, &c.ClickHouseHTTP, &c.Inventory} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// errHelp is returned when -help was asked for: usage was printed, exit 0.
var errHelp = errors.New("help requested")

// parseConfig builds the config the Mimir way: flag defaults, then the YAML file, then
// the command line again so that flags override the file.
// extra registers flags that are not part of Config (the lab's).
func parseConfig(args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (*Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("meridian", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.RegisterFlags(fs)
	for _, register := range extra {
		register(fs)
	}
	fs.Usage = func() {} // printed below for -help only, not after every error

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(fs, stderr)
			return nil, errHelp
		}
		return nil, configfile.UnknownFlag(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: version, slo, lab; see -help)", fs.Arg(0))
	}
	if file := cfg.File; file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := configfile.Decode(file, data, &cfg); err != nil {
			return nil, err
		}
		if err := fs.Parse(args); err != nil {
			return nil, configfile.UnknownFlag(fs, err)
		}
		if err := cfg.Validate(); err != nil {
			return nil, withLine(file, data, err)
		}
		return &cfg, nil
	}
	return &cfg, cfg.Validate()
}

// withLine prefixes a validation error "field.path: ..." with the file and the line of
// that field.
func withLine(file string, data []byte, err error) error {
	path, _, ok := strings.Cut(err.Error(), ":")
	if ok && !strings.ContainsAny(path, " \"") {
		if line := configfile.FieldLine(data, path); line > 0 {
			return fmt.Errorf("%s:%d: field %w", file, line, err)
		}
	}
	return fmt.Errorf("%s: %w", file, err)
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, `Usage:
  meridian [flags]                 run the modules chosen by -target (default: all)
  meridian version                 print version and build information
  meridian slo generate [-out DIR] SPEC...   write Prometheus rules for SLO specs
  meridian lab ...                 run the loopback lab (see meridian lab -help)

Flags (each also a YAML field of -config.file, e.g. -server.listen-address is server.listen_address; -config.* are flags only):
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}
