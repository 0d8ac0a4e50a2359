// Package ruler evaluates the SLO rules inside Meridian: the SLI series are appended to
// a local Prometheus TSDB on every evaluation tick, Prometheus's own rules manager
// evaluates the generated rules over it, and Prometheus's notifier sends the alerts to
// Alertmanager (API v2). The TSDB is also served through Prometheus's HTTP API.
package ruler

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/notifier"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/notifications"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/alerts/kubeslo"
	"github.com/meridianhq/meridian/alerts/slo"
	"github.com/meridianhq/meridian/pipeline"
)

// Ruler is the embedded SLO ruler. It implements alerts.Source.
type Ruler struct {
	services.Service

	cfg    Config
	logger *slog.Logger
	reg    prometheus.Registerer
	sli    *prometheus.Registry // the SLI series, gathered into the TSDB each tick
	// stores are more series gathered into the TSDB each tick (Meridian's own, raw
	// Ceph), at most cfg.StoreMaxSeries of them per tick.
	stores []store

	db       *tsdb.DB
	engine   promql.QueryEngine // Prometheus's engine behind the subquery step limit
	parser   parser.Parser      // Prometheus's parser behind the length limit
	notifs   *notifications.Notifications
	notifier *notifier.Manager
	manager  *rules.Manager
	tsets    chan map[string][]*targetgroup.Group // the Alertmanagers, handed to the notifier
	interval chan time.Duration                   // a reloaded evaluation interval, for running
	// evalMillis is the evaluation interval in force: the step of a subquery written
	// without one, as in Prometheus.
	evalMillis atomic.Int64
	wg         sync.WaitGroup

	// mu guards what ApplyConfig changes while the ruler runs.
	mu         sync.Mutex
	amConfig   *config.Config
	files      []string
	objFiles   []string  // rule files of the Kubernetes SLO objects, after files
	configTime time.Time // when the running configuration was loaded or last applied
	// loading serialises rules.Manager.Update between ApplyConfig and the Kubernetes
	// watcher, so neither undoes the other's files.
	loading sync.Mutex

	// kube follows the SLO objects of a Kubernetes API (nil: ruler.kubernetes off);
	// stopKube ends it.
	kube     *kubeslo.Watcher
	stopKube context.CancelFunc
	kubeDone chan struct{}

	// refs caches the TSDB reference of each SLI series, as Prometheus's scrape cache
	// does, so a tick appends without looking every series up again. It holds only the
	// series of the last tick: a series gone from the registry (a churned label value)
	// leaves it. Only appendSLI touches it, from starting and then the running loop.
	refs map[uint64]seriesRef
	api  http.Handler // built in starting

	history *alerts.Recorder // nil: alert changes are not recorded
	explain alerts.Explainer // nil: notifications carry the rules' annotations only

	apiRequests *prometheus.CounterVec

	appendErrors prometheus.Counter
	appended     prometheus.Counter
	storeDropped prometheus.Counter
	storeErrors  prometheus.Counter
}

type store struct {
	g    prometheus.Gatherer
	keep *regexp.Regexp // nil: every family
}

// Store adds the families of g whose name keep matches (anchored; "" keeps all) to what
// each tick appends to the TSDB, so rules, rule_files and dashboards read them: Meridian's
// own registry, or a collector's raw series (Ceph's for Rook's rules). Call before the
// ruler starts.
func (r *Ruler) Store(g prometheus.Gatherer, keep string) error {
	s := store{g: g}
	if keep != "" {
		re, err := regexp.Compile("^(?:" + keep + ")$")
		if err != nil {
			return fmt.Errorf("ruler: store series: %w", err)
		}
		s.keep = re
	}
	r.stores = append(r.stores, s)
	return nil
}

var _ alerts.Source = (*Ruler)(nil)

// Explain has every firing alert's notification carry the top cause e names beneath what
// the alert points at, as the annotation alerts.AnnotationCause. Call before the ruler starts.
func (r *Ruler) Explain(e alerts.Explainer) { r.explain = e }

// annotate adds the top cause to the firing alerts about to be sent (copies: the rules
// manager hands the notifier its own).
func (r *Ruler) annotate(as []*rules.Alert) {
	if r.explain == nil {
		return
	}
	for _, a := range as {
		if a.State != rules.StateFiring || !a.ResolvedAt.IsZero() {
			continue
		}
		if c := r.explain.Cause(a.Labels.Map()); c != "" {
			a.Annotations = labels.NewBuilder(a.Annotations).Set(alerts.AnnotationCause, c).Labels()
		}
	}
}

func (r *Ruler) notify(send rules.NotifyFunc) rules.NotifyFunc {
	return func(ctx context.Context, expr string, as ...*rules.Alert) {
		r.annotate(as)
		send(ctx, expr, as...)
	}
}

// RecordAlerts appends every alert's start and resolution (and, while it fires, a restatement
// every alerts.KeyframeEvery) to app as pipeline.AlertState records, so that past states of
// the map show the alerts firing then. Changes are seen on the ruler's evaluation tick, at
// most one evaluation interval after the rules manager's. Call before the ruler starts.
func (r *Ruler) RecordAlerts(app pipeline.Appender) {
	r.history = alerts.NewRecorder(app, "ruler")
}

// Deps are what the ruler reads from the rest of Meridian.
type Deps struct {
	// SLI is the SLI collector (alerts/sli) whose series the rules read.
	SLI prometheus.Collector
	// Registerer receives the ruler's own metrics and those of the TSDB, rules manager,
	// notifier and Kubernetes watcher.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// New builds the ruler. Specs are loaded and checked here, so a bad spec fails New, not
// the service.
func New(cfg Config, deps Deps) (*Ruler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sli, reg, logger := deps.SLI, deps.Registerer, deps.Logger
	r := &Ruler{
		cfg:        cfg,
		logger:     logger,
		reg:        reg,
		sli:        prometheus.NewRegistry(),
		refs:       map[uint64]seriesRef{},
		parser:     lengthParser{Parser: parser.NewParser(parser.Options{}), max: cfg.QueryMaxLength},
		notifs:     notifications.NewNotifications(maxNotificationSubscribers, reg),
		tsets:      make(chan map[string][]*targetgroup.Group, 1),
		interval:   make(chan time.Duration, 1),
		configTime: time.Now(),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_ruler_sli_append_errors_total",
			Help: "SLI samples the ruler's TSDB refused (out of order, invalid)."}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_ruler_sli_samples_appended_total",
			Help: "SLI samples appended to the ruler's TSDB."}),
		storeDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_ruler_store_series_dropped_total",
			Help: "Samples of stored series (Meridian's own, raw Ceph) not appended because a tick reached ruler.store_max_series."}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_ruler_store_gather_errors_total",
			Help: "Gathers of stored series that failed in part; the families gathered are still appended."}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_ruler_api_requests_total",
			Help: "Requests to the ruler's Prometheus HTTP API, by route (handler) as Prometheus registers it."}, []string{"handler"}),
	}
	if err := r.sli.Register(sli); err != nil {
		return nil, fmt.Errorf("ruler: register SLI collector: %w", err)
	}
	reg.MustRegister(r.appendErrors, r.appended, r.apiRequests, r.storeDropped, r.storeErrors)
	r.evalMillis.Store(cfg.EvaluationInterval.Milliseconds())

	var err error
	if r.files, err = ruleFiles(cfg); err != nil {
		return nil, err
	}
	if r.amConfig, err = alertmanagerConfig(cfg); err != nil {
		return nil, err
	}
	if cfg.Kubernetes.Enabled {
		// Objects take the window sets of the configured window files (at start).
		opts := slo.Options{Version: slo.GeneratorVersion, Windows: map[time.Duration]slo.Windows{}}
		for _, wf := range cfg.WindowFiles {
			ws, err := slo.LoadWindows(wf)
			if err != nil {
				return nil, err
			}
			opts.Windows[ws.Period] = ws
		}
		r.kube, err = kubeslo.New(cfg.Kubernetes, kubeslo.Deps{Apply: r.applyObjects, Registerer: reg,
			Logger: logger.With("component", "kubeslo"), Options: opts, Parser: r.parser})
		if err != nil {
			return nil, err
		}
	}
	r.Service = services.NewBasicService(r.starting, r.running, r.stopping)
	return r, nil
}

// applyObjects writes the rules of the Kubernetes SLO objects under
// DataDir/rules/kubernetes (only these: a deleted object's file goes) and loads them
// with the configured rule files, keeping the alert state of unchanged groups.
func (r *Ruler) applyObjects(files []slo.File) error {
	r.loading.Lock()
	defer r.loading.Unlock()
	dir := filepath.Join(r.cfg.DataDir, "rules", "kubernetes")
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("ruler: kubernetes rules: %w", err)
	}
	paths, err := slo.WriteFiles(dir, files)
	if err != nil {
		return fmt.Errorf("ruler: kubernetes rules: %w", err)
	}
	r.mu.Lock()
	static, am := r.files, r.amConfig
	r.mu.Unlock()
	interval := time.Duration(r.evalMillis.Load()) * time.Millisecond
	if err := r.manager.Update(interval, append(slices.Clone(static), paths...), am.GlobalConfig.ExternalLabels, r.cfg.ExternalURL, nil); err != nil {
		return fmt.Errorf("ruler: load kubernetes rules: %w", err)
	}
	r.mu.Lock()
	r.objFiles = paths
	r.mu.Unlock()
	r.logger.Info("kubernetes SLO rules loaded", "objects", len(files))
	return nil
}

// ruleFiles generates the SLO specs' rules into DataDir/rules and returns the files to
// evaluate: those, then the extra rule files.
func ruleFiles(cfg Config) ([]string, error) {
	files, err := slo.GenerateFiles(cfg.SpecFiles, cfg.WindowFiles, slo.Options{Version: slo.GeneratorVersion})
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.DataDir, "rules")
	paths, err := slo.WriteFiles(dir, files)
	if err != nil {
		return nil, fmt.Errorf("ruler: write generated rules: %w", err)
	}
	if cfg.BuiltinRules {
		names, _ := fs.Glob(alerts.Builtin, "builtin/*.yml")
		for _, n := range names {
			b, _ := alerts.Builtin.ReadFile(n)
			p := filepath.Join(dir, "builtin-"+filepath.Base(n))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				return nil, fmt.Errorf("ruler: write built-in rules: %w", err)
			}
			paths = append(paths, p)
		}
	}
	return append(paths, cfg.RuleFiles...), nil
}

// Reloadable are the fields ApplyConfig changes in a running ruler; the others keep
// their value until a restart.
var Reloadable = []string{"spec_files", "window_files", "rule_files", "evaluation_interval", "alertmanager_urls", "external_labels"}

// maxNotificationSubscribers bounds the clients of /api/v1/notifications/live, as
// Prometheus's -web.max-notifications-subscribers default does.
const maxNotificationSubscribers = 16

// ApplyConfig reloads a running ruler as Prometheus reloads: the SLO specs and rule files
// are read again, so an edited spec counts even when cfg is unchanged, and the rules
// manager replaces only the groups that changed, keeping the alert state of the others.
// The evaluation interval, external labels and Alertmanagers change with them. A spec
// or rule file that fails to load leaves the running rules and Alertmanagers as they
// were (the generated files on disk are the new ones).
// A failed reload is also shown on the API's notifications, until one succeeds.
func (r *Ruler) ApplyConfig(cfg Config) error {
	if err := r.applyConfig(cfg); err != nil {
		r.notifs.AddNotification(notifications.ConfigurationUnsuccessful)
		return err
	}
	r.notifs.DeleteNotification(notifications.ConfigurationUnsuccessful)
	return nil
}

func (r *Ruler) applyConfig(cfg Config) error {
	if r.State() != services.Running {
		return errors.New("ruler: not running")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.DataDir = r.cfg.DataDir // needs a restart: the TSDB lives there
	files, err := ruleFiles(cfg)
	if err != nil {
		return err
	}
	am, err := alertmanagerConfig(cfg)
	if err != nil {
		return err
	}
	r.loading.Lock()
	defer r.loading.Unlock()
	r.mu.Lock()
	objFiles := r.objFiles
	r.mu.Unlock()
	if err := r.manager.Update(cfg.EvaluationInterval, append(slices.Clone(files), objFiles...), am.GlobalConfig.ExternalLabels, r.cfg.ExternalURL, nil); err != nil {
		return fmt.Errorf("ruler: load rules: %w", err)
	}
	if err := r.notifier.ApplyConfig(am); err != nil {
		return fmt.Errorf("ruler: alertmanager config: %w", err)
	}
	replace(r.tsets, staticAlertmanagers(am))
	replace(r.interval, cfg.EvaluationInterval)
	r.evalMillis.Store(cfg.EvaluationInterval.Milliseconds())
	r.mu.Lock()
	r.files, r.amConfig, r.configTime = files, am, time.Now()
	r.mu.Unlock()
	r.logger.Info("ruler configuration applied", "rule_files", len(files), "alertmanagers", len(cfg.AlertmanagerURLs), "evaluation_interval", cfg.EvaluationInterval)
	return nil
}

func (r *Ruler) lastConfigTime() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.configTime
}

// replace puts v in the one-slot channel c, in place of a value not yet taken.
func replace[T any](c chan T, v T) {
	select {
	case <-c:
	default:
	}
	c <- v
}

// staticAlertmanagers hands the notifier its static Alertmanagers as discovery would.
func staticAlertmanagers(c *config.Config) map[string][]*targetgroup.Group {
	groups := map[string][]*targetgroup.Group{}
	for k, am := range c.AlertingConfig.AlertmanagerConfigs.ToMap() {
		for _, sd := range am.ServiceDiscoveryConfigs {
			groups[k] = append(groups[k], sd.(discovery.StaticConfig)...)
		}
	}
	return groups
}

func alertmanagerConfig(cfg Config) (*config.Config, error) {
	c := &config.Config{GlobalConfig: config.DefaultGlobalConfig}
	c.GlobalConfig.ExternalLabels = labels.FromMap(cfg.ExternalLabels)
	for _, s := range cfg.AlertmanagerURLs {
		u, err := parseAlertmanagerURL(s)
		if err != nil {
			return nil, fmt.Errorf("ruler.alertmanager_urls: %w", err)
		}
		am := config.DefaultAlertmanagerConfig
		am.Scheme = u.Scheme
		am.PathPrefix = u.Path
		am.ServiceDiscoveryConfigs = discovery.Configs{discovery.StaticConfig{
			{Targets: []model.LabelSet{{model.AddressLabel: model.LabelValue(u.Host)}}, Source: s},
		}}
		c.AlertingConfig.AlertmanagerConfigs = append(c.AlertingConfig.AlertmanagerConfigs, &am)
	}
	return c, nil
}

func (r *Ruler) starting(ctx context.Context) error {
	var err error
	opts := tsdb.DefaultOptions()
	opts.RetentionDuration = r.cfg.Retention.Milliseconds()
	r.db, err = tsdb.Open(filepath.Join(r.cfg.DataDir, "tsdb"), r.logger.With("component", "tsdb"), r.reg, opts, nil)
	if err != nil {
		return fmt.Errorf("ruler: open TSDB: %w", err)
	}
	// The tracker bounds concurrent queries and, on the next start, logs those that
	// were running when the process died. It is never closed (see stopping).
	queries, err := promql.NewActiveQueryTracker(r.cfg.DataDir, r.cfg.QueryMaxConcurrency, r.logger.With("component", "activeQueryTracker"))
	if err != nil {
		r.db.Close()
		return fmt.Errorf("ruler: active query tracker: %w", err)
	}
	noStep := func(int64) int64 { return r.evalMillis.Load() }
	r.engine = stepLimitEngine{
		QueryEngine: promql.NewEngine(promql.EngineOpts{
			Logger:                   r.logger.With("component", "promql"),
			Reg:                      r.reg,
			MaxSamples:               r.cfg.QueryMaxSamples,
			Timeout:                  r.cfg.QueryTimeout,
			ActiveQueryTracker:       queries,
			LookbackDelta:            5 * time.Minute,
			NoStepSubqueryIntervalFn: noStep,
			EnableAtModifier:         true,
			EnableNegativeOffset:     true,
			Parser:                   r.parser,
		}),
		parser:   r.parser,
		maxSteps: r.cfg.QueryMaxSubquerySteps,
		noStep:   noStep,
	}

	r.notifier = notifier.NewManager(&notifier.Options{
		QueueCapacity:  r.cfg.QueueCapacity,
		ExternalLabels: r.amConfig.GlobalConfig.ExternalLabels,
		Registerer:     r.reg,
	}, model.UTF8Validation, r.logger.With("component", "notifier"))
	if err := r.notifier.ApplyConfig(r.amConfig); err != nil {
		r.db.Close()
		return fmt.Errorf("ruler: alertmanager config: %w", err)
	}
	r.tsets <- staticAlertmanagers(r.amConfig)
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.notifier.Run(r.tsets) }()

	extURL, _ := url.Parse(r.cfg.ExternalURL)
	r.manager = rules.NewManager(&rules.ManagerOptions{
		ExternalURL: extURL,
		QueryFunc:   rules.EngineQueryFunc(r.engine, r.db),
		NotifyFunc:  r.notify(rules.SendAlerts(r.notifier, r.cfg.ExternalURL)),
		Context:     context.Background(),
		Appendable:  r.db,
		Queryable:   r.db,
		Logger:      r.logger.With("component", "rules"),
		Registerer:  r.reg,
		ResendDelay: r.cfg.ResendDelay,
		// Alerts are stateless bursts over windows; no `for` to restore after restart.
		OutageTolerance: time.Hour,
		ForGracePeriod:  10 * time.Minute,
		Parser:          r.parser,
	})
	if err := r.manager.Update(r.cfg.EvaluationInterval, r.files, r.amConfig.GlobalConfig.ExternalLabels, r.cfg.ExternalURL, nil); err != nil {
		r.notifier.Stop()
		r.wg.Wait()
		r.db.Close()
		return fmt.Errorf("ruler: load rules: %w", err)
	}
	r.api = r.newAPI()
	r.appendSLI(time.Now()) // first samples before the first evaluation
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.manager.Run() }()
	if r.kube != nil {
		// Objects load as they arrive: an API server that is down delays nothing.
		var kctx context.Context
		kctx, r.stopKube = context.WithCancel(context.Background())
		r.kubeDone = make(chan struct{})
		go func() { defer close(r.kubeDone); r.kube.Run(kctx) }()
	}
	r.logger.Info("ruler started", "rule_files", len(r.files), "alertmanagers", len(r.cfg.AlertmanagerURLs), "evaluation_interval", r.cfg.EvaluationInterval)
	return nil
}

func (r *Ruler) running(ctx context.Context) error {
	t := time.NewTicker(r.cfg.EvaluationInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			r.appendSLI(now)
			if r.history != nil {
				if err := r.history.Observe(ctx, now, r.Firing()); err != nil {
					r.logger.Warn("record alert changes", "err", err)
				}
			}
		case d := <-r.interval:
			t.Reset(d)
		}
	}
}

func (r *Ruler) stopping(_ error) error {
	r.notifs.AddNotification(notifications.ShuttingDown)
	if r.stopKube != nil {
		r.stopKube()
		<-r.kubeDone // its handlers have returned: no update after the manager stops
	}
	r.manager.Stop() // Run was called in starting, so Stop returns
	r.notifier.Stop()
	r.wg.Wait()
	// The active query tracker stays mapped: an API query still running now writes to
	// it when it ends.
	return r.db.Close()
}

// appendSLI gathers the SLI registry and the stores and appends every sample at ts: the
// ruler "scrapes" its own in-process series, so the rules read exactly what /metrics shows.
func (r *Ruler) appendSLI(ts time.Time) {
	mfs, err := r.sli.Gather()
	if err != nil {
		r.logger.Warn("gather SLI series", "err", err)
	}
	app := r.db.Appender(context.Background())
	t := ts.UnixMilli()
	n := 0
	seen := make(map[uint64]seriesRef, len(r.refs))
	defer func() { r.refs = seen }()
	add := func(name string, base labels.Labels, extra []string, v float64) {
		b := labels.NewBuilder(base)
		b.Set(model.MetricNameLabel, name)
		for i := 0; i+1 < len(extra); i += 2 {
			b.Set(extra[i], extra[i+1])
		}
		l := b.Labels()
		h := l.Hash()
		c, ok := r.refs[h]
		if !ok || !labels.Equal(c.labels, l) {
			c = seriesRef{labels: l}
		}
		ref, err := app.Append(c.ref, l, t, v)
		if err != nil {
			r.appendErrors.Inc()
			return
		}
		seen[h] = seriesRef{ref: ref, labels: l}
		n++
	}
	appendFamilies(mfs, add)
	budget := r.cfg.StoreMaxSeries
	for _, s := range r.stores {
		mfs, err := s.g.Gather()
		if err != nil {
			// A Gatherer returns what it could gather beside its error: append that.
			r.storeErrors.Inc()
			r.logger.Warn("gather stored series; appending the families gathered", "err", err)
		}
		for _, mf := range mfs {
			if s.keep != nil && !s.keep.MatchString(mf.GetName()) {
				continue
			}
			k := seriesIn(mf)
			if k > budget {
				r.storeDropped.Add(float64(k))
				continue
			}
			budget -= k
			appendFamilies([]*dto.MetricFamily{mf}, add)
		}
	}
	if err := app.Commit(); err != nil {
		r.logger.Warn("append SLI series", "err", err)
		r.appendErrors.Inc()
		return
	}
	r.appended.Add(float64(n))
}

// appendFamilies hands every sample of mfs to add, histograms as _bucket, _sum, _count.
func appendFamilies(mfs []*dto.MetricFamily, add func(name string, base labels.Labels, extra []string, v float64)) {
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			base := metricLabels(m)
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add(name, base, nil, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, base, nil, m.GetGauge().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					add(name+"_bucket", base, []string{model.BucketLabel, formatLe(b.GetUpperBound())}, float64(b.GetCumulativeCount()))
				}
				add(name+"_bucket", base, []string{model.BucketLabel, "+Inf"}, float64(h.GetSampleCount()))
				add(name+"_sum", base, nil, h.GetSampleSum())
				add(name+"_count", base, nil, float64(h.GetSampleCount()))
			case dto.MetricType_UNTYPED:
				add(name, base, nil, m.GetUntyped().GetValue())
			}
		}
	}
}

// seriesIn is how many series appending mf makes.
func seriesIn(mf *dto.MetricFamily) int {
	if mf.GetType() == dto.MetricType_HISTOGRAM {
		n := 0
		for _, m := range mf.GetMetric() {
			n += len(m.GetHistogram().GetBucket()) + 3
		}
		return n
	}
	return len(mf.GetMetric())
}

type seriesRef struct {
	ref    storage.SeriesRef
	labels labels.Labels
}

func metricLabels(m *dto.Metric) labels.Labels {
	b := labels.NewScratchBuilder(len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		b.Add(l.GetName(), l.GetValue())
	}
	b.Sort()
	return b.Labels()
}

// formatLe prints a bucket bound as Prometheus's text exposition does ("0.25", "1"),
// so that le="0.25" in a spec matches.
func formatLe(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// Firing returns the SLO alerts firing now (alerts.Source). Labels are the alert's
// labels (pop, site, service, cluster, … from the SLI series, plus the rule's) with
// slo set from sloth_slo; Severity is sloth_severity (page or ticket).
func (r *Ruler) Firing() []alerts.Alert {
	if r.manager == nil || r.State() != services.Running {
		return nil
	}
	var out []alerts.Alert
	for _, rule := range r.manager.AlertingRules() {
		for _, a := range rule.ActiveAlerts() {
			if a.State != rules.StateFiring {
				continue
			}
			l := a.Labels.Map()
			if s, ok := l[slo.LabelSLO]; ok {
				l["slo"] = s
			}
			out = append(out, alerts.Alert{Name: rule.Name(), Severity: l[slo.LabelSeverity], Labels: l, ActiveAt: a.ActiveAt})
		}
	}
	slices.SortFunc(out, func(a, b alerts.Alert) int {
		return compareLabels(a.Labels, b.Labels)
	})
	return out
}

func compareLabels(a, b map[string]string) int {
	return labels.Compare(labels.FromMap(a), labels.FromMap(b))
}

// RuleFiles are the rule files the ruler evaluates (generated ones first, those of
// Kubernetes SLO objects last).
func (r *Ruler) RuleFiles() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(slices.Clone(r.files), r.objFiles...)
}
