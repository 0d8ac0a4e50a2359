package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/grafana/dskit/flagext"
	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/alerts/ruler"
	"github.com/meridianhq/meridian/collectors/ceph"
	"github.com/meridianhq/meridian/collectors/geodns"
	"github.com/meridianhq/meridian/collectors/haproxy"
	"github.com/meridianhq/meridian/collectors/hubble"
	"github.com/meridianhq/meridian/collectors/keepalived"
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

	Server         server.Config     `yaml:"server"`
	Tracing        tracing.Config    `yaml:"tracing"`
	Storage        storage.Config    `yaml:"storage"`
	Pipeline       pipeline.Config   `yaml:"pipeline"`
	CollectorRing  shard.Config      `yaml:"collector_ring"`
	WireGuard      wireguard.Config  `yaml:"wireguard"`
	Ceph           ceph.Config       `yaml:"ceph"`
	Hubble         hubble.Config     `yaml:"hubble"`
	Probes         geodns.Config     `yaml:"geodns"`
	HAProxy        haproxy.Config    `yaml:"haproxy"`
	Keepalived     keepalived.Config `yaml:"keepalived"`
	Ruler          ruler.Config      `yaml:"ruler"`
	Steering       steering.Config   `yaml:"steering"`
	Topomap        topomap.Config    `yaml:"topomap"`
	ClickHouseHTTP chhttp.Config     `yaml:"clickhouse_http"`

	Inventory        inventory.Inventory `yaml:"inventory"`
	InventorySources inventory.Config    `yaml:"inventory_sources"`

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
	c.HAProxy.RegisterFlags(f)
	c.Keepalived.RegisterFlags(f)
	c.Ruler.RegisterFlags(f)
	c.Steering.RegisterFlags(f)
	c.Topomap.RegisterFlags(f)
	c.ClickHouseHTTP.RegisterFlags(f)
	c.InventorySources.RegisterFlags(f)
	f.StringVar(&c.File, "config.file", "", "YAML configuration file; flags given on the command line override it.")
	f.DurationVar(&c.ReloadInterval, "config.reload-interval", 10*time.Second, "How often -config.file and the ruler's spec, window and rule files are checked and, when changed, reloaded; 0 = only on SIGHUP or POST /-/reload.")
}

// Validate checks the whole tree and returns every problem (errors.Join), each starting
// with the YAML path of its field, so that the caller can point at the file's line.
func (c *Config) Validate() error {
	var errs []error
	for i, t := range c.Target {
		if !isTarget(t) {
			errs = append(errs, fmt.Errorf("target[%d]: unknown module %q (valid: %s)", i, t, strings.Join(targets, ", ")))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: %q is not one of debug, info, warn, error", c.LogLevel))
	}
	if c.LogFormat != "logfmt" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log_format: %q is not logfmt or json", c.LogFormat))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, errors.New("-config.reload-interval: must be >= 0"))
	}
	for _, v := range []interface{ Validate() error }{&c.Server, &c.Storage, &c.Pipeline, &c.CollectorRing, &c.WireGuard, &c.Ceph, &c.Hubble, &c.Probes, &c.HAProxy, &c.Keepalived, &c.Ruler, &c.Steering, &c.Topomap, &c.ClickHouseHTTP, &c.Inventory, &c.InventorySources} {
		errs = append(errs, configfile.Split(v.Validate())...)
	}
	// References from the components into the inventory.
	for i, v := range c.Probes.Vantages {
		if v.Site != "" && !c.Inventory.HasSite(v.Site) {
			errs = append(errs, fmt.Errorf("geodns.vantages[%d].site: unknown site %q (a vantage is one of inventory.sites)", i, v.Site))
		}
	}
	for i, r := range c.Hubble.Relays {
		if r.Cluster != "" && !c.Inventory.HasCluster(r.Cluster) && !slices.ContainsFunc(c.InventorySources.Kubernetes, func(k inventory.KubernetesSource) bool { return k.Cluster == r.Cluster }) {
			errs = append(errs, fmt.Errorf("hubble.relays[%d].cluster: unknown cluster %q (declare it under inventory.clusters or inventory_sources.kubernetes)", i, r.Cluster))
		}
	}
	for i, t := range c.HAProxy.Targets {
		if _, ok := c.Inventory.POP(t.POP); !ok {
			errs = append(errs, fmt.Errorf("haproxy.targets[%d].pop: unknown POP %q (declare it under inventory.pops)", i, t.POP))
		}
	}
	for i, n := range c.Keepalived.Nodes {
		if _, ok := c.Inventory.POP(n.POP); !ok {
			errs = append(errs, fmt.Errorf("keepalived.nodes[%d].pop: unknown POP %q (declare it under inventory.pops)", i, n.POP))
		}
	}
	// Files read at start: a missing one is a configuration mistake, found by `config check`.
	for name, files := range map[string][]string{"ruler.spec_files": c.Ruler.SpecFiles, "ruler.window_files": c.Ruler.WindowFiles, "ruler.rule_files": c.Ruler.RuleFiles} {
		for i, f := range files {
			if _, err := os.Stat(f); err != nil {
				errs = append(errs, fmt.Errorf("%s[%d]: %w", name, i, err))
			}
		}
	}
	return errors.Join(errs...)
}

// serveConfig writes the configuration in force as YAML, the way Mimir's /config does.
// It holds no secret: secrets live in files and environment variables it only names.
func (a *app) serveConfig(w http.ResponseWriter, _ *http.Request) {
	b, err := yaml.Marshal(a.cfg)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/yaml; charset=utf-8")
	w.Write(b)
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
			return nil, fmt.Errorf("config.file: %w", err)
		}
		decodeErr := configfile.Decode(file, data, &cfg)
		var fe *configfile.Error
		if decodeErr != nil && !errors.As(decodeErr, &fe) {
			return nil, decodeErr // not YAML at all
		}
		// As Prometheus's rule_files: a relative path in the file is the file's neighbour.
		for _, files := range [][]string{cfg.Ruler.SpecFiles, cfg.Ruler.WindowFiles, cfg.Ruler.RuleFiles} {
			for i, f := range files {
				if !filepath.IsAbs(f) {
					files[i] = filepath.Join(filepath.Dir(file), f)
				}
			}
		}
		if err := fs.Parse(args); err != nil {
			return nil, configfile.UnknownFlag(fs, err)
		}
		errs := configfile.Split(decodeErr)
		reported := map[string]bool{}
		for _, e := range errs {
			if errors.As(e, &fe) {
				reported[fe.Field] = true
			}
		}
		// A value that did not decode was reported with its line; validating the zero
		// value left in its place would only say it again.
		for _, e := range configfile.Split(cfg.Validate()) {
			if le := withLine(file, data, e); !covered(reported, le.Field) {
				errs = append(errs, le)
			}
		}
		return &cfg, configfile.Sorted(errs)
	}
	return &cfg, cfg.Validate()
}

// covered reports whether field, or an element or field inside it, was reported already.
func covered(reported map[string]bool, field string) bool {
	for f := range reported {
		if field != "" && (f == field || strings.HasPrefix(f, field+"[") || strings.HasPrefix(f, field+".")) {
			return true
		}
	}
	return false
}

// fieldRE is the YAML path a validation error starts with ("inventory.pops[2].vips: ...").
var fieldRE = regexp.MustCompile(`^-?([A-Za-z0-9_.\[\]-]+)[: ]`)

// withLine places a validation error "field.path: ..." at the line of that field in the
// file, or of its nearest ancestor the file has (a missing list points at its owner).
func withLine(file string, data []byte, err error) *configfile.Error {
	m := fieldRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &configfile.Error{File: file, Msg: err.Error()}
	}
	path := strings.ReplaceAll(m[1], "-", "_") // a flag name in the message: its YAML field
	msg := strings.TrimLeft(strings.TrimPrefix(err.Error(), m[0][:len(m[0])-1]), ": ")
	for p := path; p != ""; p = parent(p) {
		if line := configfile.FieldLine(data, p); line > 0 {
			return &configfile.Error{File: file, Line: line, Field: path, Msg: msg}
		}
	}
	return &configfile.Error{File: file, Field: path, Msg: msg}
}

// parent strips the last element of a dotted path: a.b[2].c -> a.b[2] -> a.b -> a.
func parent(p string) string {
	if strings.HasSuffix(p, "]") {
		return p[:strings.LastIndexByte(p, '[')]
	}
	i := strings.LastIndexByte(p, '.')
	if i < 0 {
		return ""
	}
	return p[:i]
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
