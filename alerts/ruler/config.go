package ruler

import (
	"flag"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/alerts/kubeslo"
	"github.com/meridianhq/meridian/internal/configcheck"
)

// DefaultStoreSeries are Meridian's operational series the shipped dashboards and the
// built-in self-alerts read: each is bounded by the configuration (POPs, services,
// relays, sources, regions), none by traffic.
const DefaultStoreSeries = `meridian_steering_(pop_down|weight|decisions_total|regret_milliseconds|replay_changes|replay_regret_mean_milliseconds|replay_differences)` +
	`|meridian_hubble_(relay_connected|relay_owned|flows_received_total|lost_events_total)` +
	`|meridian_wireguard_peers` +
	`|meridian_keepalived_(master|transitions_total)` +
	`|meridian_pipeline_(spool_bytes|spool_max_bytes|backpressure|consumer_dropped_records_total|records_dropped_total)` +
	`|meridian_(ceph|wireguard)_(scrapes_total|scrape_errors_total|last_success_timestamp_seconds)`

// Config of the embedded ruler (yaml section `ruler`, flags -ruler.*).
type Config struct {
	// SpecFiles are SLO specs; their rules are generated at start into DataDir/rules.
	SpecFiles List `yaml:"spec_files"`
	// WindowFiles are Sloth AlertWindows files for SLO periods without built-in windows.
	WindowFiles List `yaml:"window_files"`
	// RuleFiles are extra Prometheus rule files evaluated as they are.
	RuleFiles          List          `yaml:"rule_files"`
	EvaluationInterval time.Duration `yaml:"evaluation_interval"`
	// ResendDelay is how often a firing alert is sent again; it is also how soon an
	// alert reaches an Alertmanager that was down.
	ResendDelay time.Duration `yaml:"resend_delay"`
	// AlertmanagerURLs are Alertmanager base URLs (API v2), e.g. http://am:9093.
	AlertmanagerURLs List   `yaml:"alertmanager_urls"`
	ExternalLabels   Labels `yaml:"external_labels"`
	// ExternalURL is where users reach Meridian; alerts link back to it.
	ExternalURL   string        `yaml:"external_url"`
	DataDir       string        `yaml:"data_dir"`
	Retention     time.Duration `yaml:"retention"`
	QueueCapacity int           `yaml:"notification_queue_capacity"`
	// BuiltinRules evaluates Meridian's own rules (alerts/builtin: Ceph health, collector
	// and pipeline self-alerts) besides the SLO rules.
	BuiltinRules bool `yaml:"builtin_rules"`
	// StoreSeries selects, by metric name, the series of Meridian's own /metrics that
	// are appended to the TSDB each tick besides the SLI series (for dashboards and
	// self-alerts); StoreMaxSeries bounds how many such series one tick appends.
	StoreSeries    string `yaml:"store_series"`
	StoreMaxSeries int    `yaml:"store_max_series"`

	// Kubernetes reads Sloth and Pyrra SLO objects from a Kubernetes API, live, and
	// evaluates their rules beside the spec files' (see alerts/kubeslo).
	Kubernetes kubeslo.Config `yaml:"kubernetes"`

	// Limits of one PromQL query, from the API or a rule (see limits.go).
	QueryTimeout          time.Duration `yaml:"query_timeout"`
	QueryMaxConcurrency   int           `yaml:"query_max_concurrency"`
	QueryMaxSamples       int           `yaml:"query_max_samples"`
	QueryMaxLength        int           `yaml:"query_max_length"`
	QueryMaxSubquerySteps int64         `yaml:"query_max_subquery_steps"`
}

// RegisterFlags registers the ruler's flags with their defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.Var(&c.SpecFiles, "ruler.spec-files", "Comma-separated SLO spec files (Sloth prometheus/v1) to generate and evaluate rules for.")
	f.Var(&c.WindowFiles, "ruler.window-files", "Comma-separated Sloth AlertWindows files for custom SLO periods.")
	f.Var(&c.RuleFiles, "ruler.rule-files", "Comma-separated extra Prometheus rule files to evaluate.")
	f.DurationVar(&c.EvaluationInterval, "ruler.evaluation-interval", 10*time.Second, "How often rules are evaluated and the SLI series are appended to the ruler's TSDB.")
	f.DurationVar(&c.ResendDelay, "ruler.resend-delay", time.Minute, "How often firing alerts are re-sent to Alertmanager.")
	f.Var(&c.AlertmanagerURLs, "ruler.alertmanager-urls", "Comma-separated Alertmanager URLs (API v2) to send alerts to.")
	f.Var(&c.ExternalLabels, "ruler.external-labels", "Comma-separated name=value labels added to every alert sent.")
	f.StringVar(&c.ExternalURL, "ruler.external-url", "http://localhost:8080/prometheus", "URL Meridian's Prometheus API is reached at; alerts link to it.")
	f.StringVar(&c.DataDir, "ruler.data-dir", "data/ruler", "Directory of the ruler's TSDB and generated rule files.")
	f.DurationVar(&c.Retention, "ruler.retention", 31*24*time.Hour, "How long the ruler's TSDB keeps samples; at least the longest SLO period.")
	f.IntVar(&c.QueueCapacity, "ruler.notification-queue-capacity", 10000, "Alerts held for Alertmanager before the oldest are dropped.")
	f.BoolVar(&c.BuiltinRules, "ruler.builtin-rules", true, "Evaluate Meridian's built-in rules (Ceph health, collector and pipeline self-alerts).")
	f.StringVar(&c.StoreSeries, "ruler.store-series", DefaultStoreSeries, "Regular expression (anchored) over metric names: Meridian's own series appended to the ruler's TSDB each tick, for dashboards and self-alerts.")
	f.IntVar(&c.StoreMaxSeries, "ruler.store-max-series", 20000, "Most series of Meridian's own and of raw Ceph metrics appended to the ruler's TSDB per tick; more are dropped and counted.")
	c.Kubernetes.RegisterFlags(f, "ruler.kubernetes.")
	f.DurationVar(&c.QueryTimeout, "ruler.query-timeout", 2*time.Minute, "Longest a PromQL query (API or rule) may run, waiting for its turn included.")
	f.IntVar(&c.QueryMaxConcurrency, "ruler.query-max-concurrency", 20, "PromQL queries evaluated at once; more wait for a turn within their timeout.")
	f.IntVar(&c.QueryMaxSamples, "ruler.query-max-samples", 50_000_000, "Samples a PromQL query may hold in memory at once.")
	f.IntVar(&c.QueryMaxLength, "ruler.query-max-length", 8<<10, "Longest PromQL expression or series selector accepted, in bytes; checked before parsing, whose time grows with the square of the nesting depth.")
	f.Int64Var(&c.QueryMaxSubquerySteps, "ruler.query-max-subquery-steps", 11000, "Steps one subquery may take (its range plus the outer range, over its step); checked before evaluation.")
}

// Validate names the field at fault.
func (c *Config) Validate() error {
	if err := configcheck.First(
		configcheck.Positive("ruler.evaluation_interval", c.EvaluationInterval),
		configcheck.Positive("ruler.resend_delay", c.ResendDelay),
		configcheck.Set("ruler.data_dir", c.DataDir),
		configcheck.AtLeast("ruler.retention", c.Retention, time.Hour),
		configcheck.NotNegative("ruler.store_max_series", c.StoreMaxSeries),
		configcheck.Positive("ruler.notification_queue_capacity", c.QueueCapacity),
		configcheck.Positive("ruler.query_timeout", c.QueryTimeout),
		configcheck.Positive("ruler.query_max_concurrency", c.QueryMaxConcurrency),
		configcheck.Positive("ruler.query_max_samples", c.QueryMaxSamples),
		configcheck.Positive("ruler.query_max_length", c.QueryMaxLength),
		configcheck.Positive("ruler.query_max_subquery_steps", c.QueryMaxSubquerySteps),
	); err != nil {
		return err
	}
	if _, err := regexp.Compile("^(?:" + c.StoreSeries + ")$"); err != nil {
		return fmt.Errorf("ruler.store_series: %w", err)
	}
	for _, u := range c.AlertmanagerURLs {
		if _, err := parseAlertmanagerURL(u); err != nil {
			return fmt.Errorf("ruler.alertmanager_urls: %w", err)
		}
	}
	if _, err := url.Parse(c.ExternalURL); err != nil {
		return fmt.Errorf("ruler.external_url: %w", err)
	}
	for k := range c.ExternalLabels {
		if !model.LegacyValidation.IsValidLabelName(k) {
			return fmt.Errorf("ruler.external_labels: invalid label name %q", k)
		}
	}
	return nil
}

func parseAlertmanagerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q: want http(s)://host:port[/prefix]", s)
	}
	return u, nil
}

// Labels is a label set that reads name=value,name=value from a flag and a map from YAML.
type Labels map[string]string

func (l Labels) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

func (l *Labels) Set(s string) error {
	m := Labels{}
	for _, kv := range strings.Split(s, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q: want name=value", kv)
		}
		m[k] = v
	}
	*l = m
	return nil
}

// List is a list of strings: comma-separated in a flag, a YAML list (or one
// comma-separated string) in the config file.
type List []string

func (l List) String() string { return strings.Join(l, ",") }

func (l *List) Set(s string) error {
	*l = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func (l *List) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return l.Set(n.Value)
	}
	var v []string
	if err := n.Decode(&v); err != nil {
		return err
	}
	*l = v
	return nil
}
