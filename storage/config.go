package storage

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/storage/chdb"
)

// Config selects and configures the driver: embedded chDB unless ClickHouse.DSN is set.
type Config struct {
	Path     string `yaml:"path"`
	ChdbLib  string `yaml:"chdb_lib"`
	Database string `yaml:"database"`
	// ChdbMaxMemory bounds the embedded engine's memory (bytes; chdb.Limits).
	ChdbMaxMemory int64        `yaml:"chdb_max_memory"`
	TTL           TTLs         `yaml:"ttl"`
	ClickHouse    ServerConfig `yaml:"clickhouse"`
}

// ServerConfig is the ClickHouse server or cluster driver's configuration.
type ServerConfig struct {
	// DSN like clickhouse://user@host:9440/?secure=true&dial_timeout=5s; the password
	// comes from PasswordFile or $MERIDIAN_CLICKHOUSE_PASSWORD, never from the DSN.
	DSN          string        `yaml:"dsn"`
	Cluster      string        `yaml:"cluster"`
	PasswordFile string        `yaml:"password_file" secret:"MERIDIAN_CLICKHOUSE_PASSWORD"`
	DialTimeout  time.Duration `yaml:"dial_timeout"`
}

// Password is where the server's password is: password_file, else $MERIDIAN_CLICKHOUSE_PASSWORD.
func (c *ServerConfig) Password() secret.Source {
	return secret.Source{File: c.PasswordFile, Env: EnvPassword, Field: "storage.clickhouse.password_file"}
}

// EnvPassword names the environment variable holding the ClickHouse server password.
const EnvPassword = "MERIDIAN_CLICKHOUSE_PASSWORD"

// RegisterFlags registers -storage.* and -clickhouse.* flags with their defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.Path, "storage.path", "./data/clickhouse", "Data directory of the embedded ClickHouse engine (chDB).")
	f.StringVar(&c.ChdbLib, "storage.chdb-lib", "", "Path of libchdb.so (default $"+chdb.EnvLib+", else ~/.cache/meridian/chdb-"+chdb.Version+"/package/libchdb.so; 'make chdb' fetches it).")
	f.Int64Var(&c.ChdbMaxMemory, "storage.chdb-max-memory", chdb.DefaultLimits.MaxMemory, "Memory the embedded engine may use, in bytes (its max_server_memory_usage; its caches have fixed small ceilings, see storage/README.md). 0: ClickHouse's default, 90% of RAM.")
	f.StringVar(&c.Database, "storage.database", "meridian", "ClickHouse database holding Meridian's tables.")
	c.TTL = DefaultTTLs()
	f.Var(&c.TTL, "storage.ttl", "Retention per table as table=duration, comma separated, merged over the defaults (e.g. flows=14d,probes=60d).")
	f.StringVar(&c.ClickHouse.DSN, "storage.clickhouse.dsn", "", "ClickHouse server DSN (native protocol, e.g. clickhouse://meridian@ch:9440/?secure=true). Empty: embedded engine.")
	f.StringVar(&c.ClickHouse.Cluster, "storage.clickhouse.cluster", "", "ClickHouse cluster name: tables are created ON CLUSTER as ReplicatedMergeTree with Distributed tables over them.")
	f.StringVar(&c.ClickHouse.PasswordFile, "storage.clickhouse.password-file", "", "File holding the ClickHouse password (else $"+EnvPassword+").")
	f.DurationVar(&c.ClickHouse.DialTimeout, "storage.clickhouse.dial-timeout", 5*time.Second, "Timeout to connect to the ClickHouse server.")
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks the configuration, naming the offending field.
func (c *Config) Validate() error {
	if !identRe.MatchString(c.Database) {
		return fmt.Errorf("storage.database: %q is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)", c.Database)
	}
	if c.ChdbMaxMemory < 0 {
		return fmt.Errorf("storage.chdb_max_memory: %d is negative (0: the engine's default)", c.ChdbMaxMemory)
	}
	if c.ClickHouse.DSN == "" {
		if c.Path == "" {
			return errors.New("storage.path: empty (the embedded engine needs a data directory)")
		}
		if c.ClickHouse.Cluster != "" {
			return errors.New("storage.clickhouse.cluster: needs storage.clickhouse.dsn (the embedded engine is a single node)")
		}
	}
	if u, err := url.Parse(c.ClickHouse.DSN); err == nil && u.User != nil {
		if _, set := u.User.Password(); set {
			return errors.New("storage.clickhouse.dsn: holds a password; put it in storage.clickhouse.password_file or $" + EnvPassword + " (a DSN is logged and shown)")
		}
	}
	if c.ClickHouse.Cluster != "" && !identRe.MatchString(c.ClickHouse.Cluster) {
		return fmt.Errorf("storage.clickhouse.cluster: %q is not a plain identifier", c.ClickHouse.Cluster)
	}
	for t, d := range c.TTL {
		if !slices.Contains(TTLTables, t) {
			return fmt.Errorf("storage.ttl: unknown table %q (tables: %s)", t, strings.Join(TTLTables, ", "))
		}
		if d < model.Duration(time.Hour) {
			return fmt.Errorf("storage.ttl: %s=%s is shorter than 1h", t, d)
		}
	}
	return nil
}

// TTLTables are the tables with a retention, the keys of TTLs.
var TTLTables = []string{
	"tunnel_stats", "osd_stats", "ceph_health", "ceph_pools", "flows", "flow_edges",
	"probes", "steering_decisions", "steering_inputs", "flows_1m", "probes_1m",
	"haproxy_stats", "vrrp_states", "vrrp_transitions", "alert_states",
}

// TTLs is the retention per table. As a flag it reads table=duration pairs (durations
// like 7d, 36h) and merges them over what is already set.
type TTLs map[string]model.Duration

// DefaultTTLs: raw flows are the bulk and keep a week; stats and probes a month; slow,
// small tables and the rollups that serve long dashboard ranges three months.
func DefaultTTLs() TTLs {
	d := func(days int) model.Duration { return model.Duration(time.Duration(days) * 24 * time.Hour) }
	return TTLs{
		"flows": d(7), "flow_edges": d(30), "tunnel_stats": d(30), "osd_stats": d(30),
		"probes": d(30), "ceph_health": d(90), "ceph_pools": d(90), "steering_decisions": d(90),
		"steering_inputs": d(30), "flows_1m": d(90), "probes_1m": d(90),
		"haproxy_stats": d(30), "vrrp_states": d(30), "vrrp_transitions": d(90), "alert_states": d(90),
	}
}

func (t *TTLs) String() string {
	if t == nil || *t == nil {
		return ""
	}
	keys := make([]string, 0, len(*t))
	for k := range *t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + (*t)[k].String()
	}
	return strings.Join(parts, ",")
}

// Set merges table=duration pairs.
func (t *TTLs) Set(s string) error {
	if *t == nil {
		*t = TTLs{}
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return fmt.Errorf("%q: want table=duration", kv)
		}
		d, err := model.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		(*t)[k] = d
	}
	return nil
}

// UnmarshalYAML merges the YAML map over the defaults, so a file names only what it changes.
func (t *TTLs) UnmarshalYAML(unmarshal func(any) error) error {
	m := map[string]model.Duration{}
	if err := unmarshal(&m); err != nil {
		return err
	}
	if *t == nil {
		*t = DefaultTTLs()
	}
	for k, v := range m {
		(*t)[k] = v
	}
	return nil
}

// get returns the table's TTL, its default when unset.
func (t TTLs) get(table string) time.Duration {
	if d, ok := t[table]; ok {
		return time.Duration(d)
	}
	return time.Duration(DefaultTTLs()[table])
}
