package slo

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

// Pyrra's ServiceLevelObjective (pyrra.dev/v1alpha1): its apiVersion and kind, and the
// prefix of the object labels and annotations Pyrra copies to its rules.
const (
	PyrraAPIVersion = "pyrra.dev/v1alpha1"
	PyrraKind       = "ServiceLevelObjective"
	pyrraPropagate  = "pyrra.dev/"
)

// PyrraSLO is a Pyrra ServiceLevelObjective with the fields of Pyrra's CRD that shape
// the rules. Meridian generates the rules Pyrra's Kubernetes operator puts in its
// PrometheusRule (without generic rules: Pyrra's --generic-rules is off by default):
// the "<name>-increase" group (increase over the window, absent alerts) and the
// "<name>" group (burn rates per window, the four multi-window burn-rate alerts), for
// its four indicators: ratio, latency (classic histogram), latencyNative (native
// histogram) and bool_gauge.
type PyrraSLO struct {
	APIVersion string    `yaml:"apiVersion"`
	Kind       string    `yaml:"kind"`
	Metadata   pyrraMeta `yaml:"metadata"`
	Spec       struct {
		Description string `yaml:"description"`
		Target      string `yaml:"target"`
		Window      string `yaml:"window"`
		Indicator   struct {
			Ratio *struct {
				Errors   pyrraQuery `yaml:"errors"`
				Total    pyrraQuery `yaml:"total"`
				Grouping []string   `yaml:"grouping"`
			} `yaml:"ratio"`
			Latency *struct {
				Success  pyrraQuery `yaml:"success"`
				Total    pyrraQuery `yaml:"total"`
				Grouping []string   `yaml:"grouping"`
			} `yaml:"latency"`
			LatencyNative *struct {
				Total    pyrraQuery `yaml:"total"`
				Latency  string     `yaml:"latency"`
				Grouping []string   `yaml:"grouping"`
			} `yaml:"latencyNative"`
			BoolGauge *struct {
				Metric   string   `yaml:"metric"`
				Grouping []string `yaml:"grouping"`
			} `yaml:"bool_gauge"`
		} `yaml:"indicator"`
		Alerting struct {
			Disabled   *bool  `yaml:"disabled"`
			Burnrates  *bool  `yaml:"burnrates"`
			Absent     *bool  `yaml:"absent"`
			Name       string `yaml:"name"`
			AbsentName string `yaml:"absentName"`
		} `yaml:"alerting"`
		// Where Pyrra's operator writes its PrometheusRule; no effect on the rules.
		RuleNamespace           string `yaml:"rulenamespace"`
		PartialResponseStrategy string `yaml:"partial_response_strategy"`
	} `yaml:"spec"`
	Status map[string]any `yaml:"status"`
}

// pyrraMeta is the object metadata Meridian reads; the rest (uid, managedFields of an
// object exported from a cluster) is ignored, not refused as a misspelt spec field is.
type pyrraMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func (m *pyrraMeta) UnmarshalYAML(n *yaml.Node) error {
	type lenient pyrraMeta
	return n.Decode((*lenient)(m))
}

type pyrraQuery struct {
	Metric string `yaml:"metric"`
}

func decodePyrra(name string, n *yaml.Node) (*Spec, error) {
	var p PyrraSLO
	if err := decodeStrict(n, &p); err != nil {
		return nil, &SpecError{File: name, Field: "spec", Err: err}
	}
	return &Spec{Version: VersionPrometheusV1, Service: p.Metadata.Name, origin: PyrraAPIVersion, Pyrra: &p}, nil
}

// pyrraObjective is a validated PyrraSLO, as Pyrra's slo.Objective holds it.
type pyrraObjective struct {
	name        string
	labels      map[string]string // propagated: pyrra.dev/<k> object labels, as <k>
	annotations map[string]string // likewise from the object annotations
	target      float64           // 0-1
	window      time.Duration
	indicator   pyrraIndicator
	total       *parser.VectorSelector // the bool gauge for boolGauge
	errors      *parser.VectorSelector // errors (ratio) or success (latency); nil otherwise
	threshold   time.Duration          // latencyNative: requests faster than this succeed
	grouping    []string
	burnrates   bool
	absent      bool
	alert       string
	absentAlert string
}

type pyrraIndicator int

const (
	pyrraRatio pyrraIndicator = iota
	pyrraLatency
	pyrraLatencyNative
	pyrraBoolGauge
)

// objective checks the object as Pyrra's admission webhook and Internal() do, naming
// the field at fault.
func (p *PyrraSLO) objective(file string) (*pyrraObjective, error) {
	fail := func(field, format string, args ...any) error {
		return &SpecError{File: file, SLO: p.Metadata.Name, Field: field, Err: fmt.Errorf(format, args...)}
	}
	if p.Metadata.Name == "" {
		return nil, fail("metadata.name", "is required")
	}
	if !nameRE.MatchString(p.Metadata.Name) {
		return nil, fail("metadata.name", "%q must match %s", p.Metadata.Name, nameRE)
	}
	o := &pyrraObjective{name: p.Metadata.Name, labels: propagated(p.Metadata.Labels), annotations: propagated(p.Metadata.Annotations),
		burnrates: true, absent: true, alert: "ErrorBudgetBurn", absentAlert: "SLOMetricAbsent"}
	if err := checkLabels(o.labels); err != nil {
		return nil, fail("metadata.labels", "%v", err)
	}
	if p.Spec.Target == "" {
		return nil, fail("spec.target", "is required")
	}
	target, err := strconv.ParseFloat(p.Spec.Target, 64)
	if err != nil {
		return nil, fail("spec.target", "%q is not a number", p.Spec.Target)
	}
	if !(target > 0 && target < 100) {
		return nil, fail("spec.target", "%v is out of range: must be > 0 and < 100 (a percentage)", target)
	}
	o.target = target / 100
	if o.window, err = positiveDuration(p.Spec.Window); err != nil {
		return nil, fail("spec.window", "%v", err)
	}
	a := p.Spec.Alerting
	if a.Burnrates != nil {
		o.burnrates = *a.Burnrates
	}
	if a.Disabled != nil && *a.Disabled {
		o.burnrates = false
	}
	if a.Absent != nil {
		o.absent = *a.Absent
	}
	if a.Name != "" {
		o.alert = a.Name
	}
	if a.AbsentName != "" {
		o.absentAlert = a.AbsentName
	}
	for field, n := range map[string]string{"spec.alerting.name": o.alert, "spec.alerting.absentName": o.absentAlert} {
		if !model.LegacyValidation.IsValidMetricName(n) {
			return nil, fail(field, "%q is not a valid alert name", n)
		}
	}

	ind := p.Spec.Indicator
	kinds := 0
	for _, set := range []bool{ind.Ratio != nil, ind.Latency != nil, ind.LatencyNative != nil, ind.BoolGauge != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds != 1:
		return nil, fail("spec.indicator", "exactly one of ratio, latency, latencyNative or bool_gauge is required")
	case ind.Ratio != nil:
		if o.total, err = selector(ind.Ratio.Total.Metric); err != nil {
			return nil, fail("spec.indicator.ratio.total.metric", "%v", err)
		}
		if o.errors, err = selector(ind.Ratio.Errors.Metric); err != nil {
			return nil, fail("spec.indicator.ratio.errors.metric", "%v", err)
		}
		o.grouping = ind.Ratio.Grouping
	case ind.Latency != nil:
		o.indicator = pyrraLatency
		if o.total, err = selector(ind.Latency.Total.Metric); err != nil {
			return nil, fail("spec.indicator.latency.total.metric", "%v", err)
		}
		if o.errors, err = selector(ind.Latency.Success.Metric); err != nil {
			return nil, fail("spec.indicator.latency.success.metric", "%v", err)
		}
		le := ""
		for _, m := range o.errors.LabelMatchers {
			if m.Name == model.BucketLabel {
				le = m.Value
			}
		}
		if _, err := strconv.ParseFloat(le, 64); err != nil {
			return nil, fail("spec.indicator.latency.success.metric", "must select one bucket with a le label matcher holding a number")
		}
		o.grouping = ind.Latency.Grouping
	case ind.LatencyNative != nil:
		o.indicator = pyrraLatencyNative
		if o.total, err = selector(ind.LatencyNative.Total.Metric); err != nil {
			return nil, fail("spec.indicator.latencyNative.total.metric", "%v", err)
		}
		if o.threshold, err = positiveDuration(ind.LatencyNative.Latency); err != nil {
			return nil, fail("spec.indicator.latencyNative.latency", "%v", err)
		}
		o.grouping = ind.LatencyNative.Grouping
	default:
		o.indicator = pyrraBoolGauge
		if o.total, err = selector(ind.BoolGauge.Metric); err != nil {
			return nil, fail("spec.indicator.bool_gauge.metric", "%v", err)
		}
		o.grouping = ind.BoolGauge.Grouping
	}
	for _, g := range o.grouping {
		if !model.LegacyValidation.IsValidLabelName(g) {
			return nil, fail("spec.indicator.grouping", "invalid label name %q", g)
		}
	}
	return o, nil
}

func propagated(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if name, ok := strings.CutPrefix(k, pyrraPropagate); ok {
			out[name] = v
		}
	}
	return out
}

// selector parses a Pyrra metric: one vector selector with a metric name.
func selector(s string) (*parser.VectorSelector, error) {
	if s == "" {
		return nil, errors.New("is required")
	}
	e, err := promqlParser.ParseExpr(s)
	if err != nil {
		return nil, fmt.Errorf("invalid PromQL: %w", err)
	}
	v, ok := e.(*parser.VectorSelector)
	if !ok || v.Name == "" {
		return nil, fmt.Errorf("%q is not a vector selector with a metric name", s)
	}
	return v, nil
}

// pyrraWindow is one of Pyrra's four multi-window burn-rate alerts. The windows scale
// with the SLO window, from Pyrra's 28-day ratios, rounded to the minute.
type pyrraWindow struct {
	severity          string
	forD, long, short time.Duration
	factor            float64
}

func pyrraWindows(w time.Duration) []pyrraWindow {
	r := func(d time.Duration) time.Duration { return d.Round(time.Minute) }
	return []pyrraWindow{
		{"critical", r(w / (28 * 24 * 30)), r(w / (28 * 24)), r(w / (28 * 24 * 12)), 14},
		{"critical", r(w / (28 * 24 * 4)), r(w / (28 * 4)), r(w / (28 * 24 * 2)), 7},
		{"warning", r(w / (28 * 24)), r(w / 28), r(w / (28 * 12)), 2},
		{"warning", r(w / (28 * 8)), r(w / 7), r(w / (28 * 4)), 1},
	}
}

// metricBase is a metric name without the suffix Pyrra strips for its record names.
func metricBase(name string, suffixes ...string) string {
	for _, s := range suffixes {
		name = strings.TrimSuffix(name, s)
	}
	return name
}

func (o *pyrraObjective) burnrateName(w time.Duration) string {
	return metricBase(o.total.Name, "_total", "_count") + ":burnrate" + promDuration(w)
}

func increaseName(metric string, w time.Duration) string {
	return metricBase(metric, "_total", "_count", "_bucket") + ":increase" + promDuration(w)
}

// ruleLabels are the slo label, the propagated labels and the total selector's equality
// matchers, without the labels the rule groups by (their values are in the series).
func (o *pyrraObjective) ruleLabels(grouping []string) map[string]string {
	l := maps.Clone(o.labels)
	l["slo"] = o.name
	for _, m := range o.total.LabelMatchers {
		if m.Type == labels.MatchEqual && m.Name != model.MetricNameLabel {
			l[m.Name] = m.Value
		}
	}
	for _, g := range grouping {
		delete(l, g)
	}
	return l
}

func (o *pyrraObjective) annotationsOrNil() map[string]string {
	if len(o.annotations) == 0 {
		return nil
	}
	return maps.Clone(o.annotations)
}

// sel renders name{matchers} over a range w (0: an instant selector).
func sel(name string, ms []*labels.Matcher, w time.Duration) parser.Expr {
	v := &parser.VectorSelector{Name: name, LabelMatchers: ms}
	if w == 0 {
		return v
	}
	return &parser.MatrixSelector{VectorSelector: v, Range: w}
}

func sumBy(grouping []string, e parser.Expr) parser.Expr {
	return &parser.AggregateExpr{Op: parser.SUM, Grouping: grouping, Expr: e}
}

func call(fn string, args ...parser.Expr) parser.Expr {
	return &parser.Call{Func: parser.Functions[fn], Args: args}
}

func bin(op parser.ItemType, l, r parser.Expr) parser.Expr {
	return &parser.BinaryExpr{Op: op, LHS: l, RHS: r, VectorMatching: &parser.VectorMatching{Card: parser.CardOneToOne}}
}

// rate is sum by (grouping) (rate(selector[w])).
func rateOf(v *parser.VectorSelector, grouping []string, w time.Duration) parser.Expr {
	return sumBy(grouping, call("rate", sel(v.Name, v.LabelMatchers, w)))
}

func (o *pyrraObjective) burnrate(w time.Duration) string {
	g := slices.Sorted(slices.Values(dedup(o.grouping)))
	switch o.indicator {
	case pyrraLatency:
		// (total - fast enough) / total
		return bin(parser.DIV, &parser.ParenExpr{Expr: bin(parser.SUB, rateOf(o.total, g, w), rateOf(o.errors, g, w))}, rateOf(o.total, g, w)).String()
	case pyrraLatencyNative:
		// 1 - the fraction of observations in [0, threshold]
		return bin(parser.SUB, &parser.NumberLiteral{Val: 1}, o.histogramFraction(rateOf(o.total, g, w))).String()
	case pyrraBoolGauge:
		// (samples - true samples) / samples
		count := overTime("count_over_time", o.total, g, w)
		return bin(parser.DIV, &parser.ParenExpr{Expr: bin(parser.SUB, count, overTime("sum_over_time", o.total, g, w))}, count).String()
	}
	return bin(parser.DIV, rateOf(o.errors, g, w), rateOf(o.total, g, w)).String()
}

// overTime is sum by (grouping) (fn(selector[w])).
func overTime(fn string, v *parser.VectorSelector, grouping []string, w time.Duration) parser.Expr {
	return sumBy(grouping, call(fn, sel(v.Name, v.LabelMatchers, w)))
}

// histogramFraction is histogram_fraction(0, threshold, e).
func (o *pyrraObjective) histogramFraction(e parser.Expr) parser.Expr {
	return call("histogram_fraction", &parser.NumberLiteral{Val: 0}, &parser.NumberLiteral{Val: o.threshold.Seconds()}, e)
}

func dedup(s []string) []string {
	m := map[string]bool{}
	var out []string
	for _, v := range s {
		if !m[v] {
			m[v] = true
			out = append(out, v)
		}
	}
	return out
}

// pyrraGroups generates Pyrra's two rule groups for one objective.
func pyrraGroups(o *pyrraObjective) []rulefmt.RuleGroup {
	return []rulefmt.RuleGroup{o.increaseGroup(), o.burnrateGroup()}
}

// increaseInterval is the "<name>-increase" group's interval: 30s below a 7-day window,
// 30s more per started week, at most 4m.
func (o *pyrraObjective) increaseInterval() time.Duration {
	week := 7 * 24 * time.Hour
	steps := min(int(o.window/week), 7)
	return time.Duration(30*(steps+1)) * time.Second
}

// absentFor is when an absent metric (read as 100% errors) would make the most critical
// burn-rate alert fire: its long window crossing the threshold, plus its `for`.
func (o *pyrraObjective) absentFor() time.Duration {
	w := pyrraWindows(o.window)[0]
	threshold := w.factor * (1 - o.target)
	d := time.Duration(threshold*w.long.Seconds())*time.Second + w.forD
	return d.Round(time.Minute)
}

func (o *pyrraObjective) increaseGroup() rulefmt.RuleGroup {
	g := rulefmt.RuleGroup{Name: o.name + "-increase", Interval: model.Duration(o.increaseInterval())}
	switch o.indicator {
	case pyrraLatencyNative:
		g.Rules = o.nativeIncreaseRules()
		return g
	case pyrraBoolGauge:
		g.Rules = o.boolGaugeIncreaseRules()
		return g
	}
	// Grouped as Pyrra groups: the objective's grouping, the labels only the errors
	// (or success) selector names (a ratio's status code; never le), and the labels the
	// total selector matches by regexp.
	gm := map[string]bool{}
	for _, m := range o.errors.LabelMatchers {
		gm[m.Name] = true
	}
	for _, m := range o.total.LabelMatchers {
		delete(gm, m.Name)
	}
	delete(gm, model.BucketLabel)
	for _, g := range o.grouping {
		gm[g] = true
	}
	for _, m := range o.total.LabelMatchers {
		if m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp {
			gm[m.Name] = true
		}
	}
	grouping := slices.Sorted(maps.Keys(gm))
	ruleLabels := o.ruleLabels(grouping)

	increase := func(v *parser.VectorSelector) string {
		return sumBy(grouping, call("increase", sel(v.Name, v.LabelMatchers, o.window))).String()
	}
	if o.indicator == pyrraLatency {
		leLabels := maps.Clone(ruleLabels)
		for _, m := range o.errors.LabelMatchers {
			if m.Name == model.BucketLabel {
				leLabels[model.BucketLabel] = m.Value
			}
		}
		g.Rules = append(g.Rules,
			rulefmt.Rule{Record: increaseName(o.total.Name, o.window), Expr: increase(o.total), Labels: ruleLabels},
			rulefmt.Rule{Record: increaseName(o.errors.Name, o.window), Expr: increase(o.errors), Labels: leLabels})
		if o.absent {
			g.Rules = append(g.Rules, o.absentRule(o.total, ruleLabels), o.absentRule(o.errors, leLabels))
		}
		return g
	}
	g.Rules = append(g.Rules, rulefmt.Rule{Record: increaseName(o.total.Name, o.window), Expr: increase(o.total), Labels: ruleLabels})
	if o.absent {
		g.Rules = append(g.Rules, o.absentRule(o.total, ruleLabels))
	}
	if o.errors.Name != o.total.Name {
		g.Rules = append(g.Rules, rulefmt.Rule{Record: increaseName(o.errors.Name, o.window), Expr: increase(o.errors), Labels: ruleLabels})
		if o.absent {
			g.Rules = append(g.Rules, o.absentRule(o.errors, ruleLabels))
		}
	}
	return g
}

// absentRule alerts when the selector matches nothing, with the rule labels and
// severity critical.
func (o *pyrraObjective) absentRule(v *parser.VectorSelector, l map[string]string) rulefmt.Rule {
	al := maps.Clone(l)
	al["severity"] = "critical"
	return rulefmt.Rule{Alert: o.absentAlert, Expr: bin(parser.EQLC, call("absent", sel(v.Name, v.LabelMatchers, 0)), &parser.NumberLiteral{Val: 1}).String(),
		For: model.Duration(o.absentFor()), Labels: al, Annotations: o.annotationsOrNil()}
}

// nativeIncreaseRules are a native histogram's observations over the window and, with
// le set to the threshold, those at or below it. As in Pyrra: grouped by the objective's
// grouping as written, labelled with every equality matcher (grouped or not), and no
// absent alert.
func (o *pyrraObjective) nativeIncreaseRules() []rulefmt.Rule {
	ruleLabels := o.ruleLabels(nil)
	increase := func() parser.Expr {
		return sumBy(o.grouping, call("increase", sel(o.total.Name, o.total.LabelMatchers, o.window)))
	}
	count := func() parser.Expr { return call("histogram_count", increase()) }
	leLabels := maps.Clone(ruleLabels)
	leLabels[model.BucketLabel] = strconv.FormatFloat(o.threshold.Seconds(), 'g', -1, 64)
	return []rulefmt.Rule{
		{Record: increaseName(o.total.Name, o.window), Expr: count().String(), Labels: ruleLabels},
		{Record: increaseName(o.total.Name, o.window), Expr: bin(parser.MUL, o.histogramFraction(increase()), count()).String(), Labels: leLabels},
	}
}

// boolGaugeIncreaseRules count the gauge's samples (<metric>:count<window>) and its
// true ones (<metric>:sum<window>) over the window. Pyrra groups them by the
// objective's grouping and by every label the selector matches on, the metric name
// included (count_over_time drops it, so that grouping adds nothing to the result).
func (o *pyrraObjective) boolGaugeIncreaseRules() []rulefmt.Rule {
	gm := map[string]bool{}
	for _, g := range o.grouping {
		gm[g] = true
	}
	for _, m := range o.total.LabelMatchers {
		gm[m.Name] = true
	}
	grouping := slices.Sorted(maps.Keys(gm))
	ruleLabels := o.ruleLabels(grouping)
	rules := []rulefmt.Rule{
		{Record: o.total.Name + ":count" + promDuration(o.window), Expr: overTime("count_over_time", o.total, grouping, o.window).String(), Labels: ruleLabels},
		{Record: o.total.Name + ":sum" + promDuration(o.window), Expr: overTime("sum_over_time", o.total, grouping, o.window).String(), Labels: ruleLabels},
	}
	if o.absent {
		rules = append(rules, o.absentRule(o.total, ruleLabels))
	}
	return rules
}

func (o *pyrraObjective) burnrateGroup() rulefmt.RuleGroup {
	ws := pyrraWindows(o.window)
	seen := map[time.Duration]bool{}
	var windows []time.Duration
	for _, w := range ws {
		for _, d := range []time.Duration{w.short, w.long} {
			if !seen[d] {
				seen[d] = true
				windows = append(windows, d)
			}
		}
	}
	slices.Sort(windows)
	ruleLabels := o.ruleLabels(o.grouping)
	g := rulefmt.RuleGroup{Name: o.name, Interval: model.Duration(30 * time.Second)}
	for _, w := range windows {
		g.Rules = append(g.Rules, rulefmt.Rule{Record: o.burnrateName(w), Expr: o.burnrate(w), Labels: maps.Clone(ruleLabels)})
	}
	if !o.burnrates {
		return g
	}
	grouped := map[string]bool{}
	for _, l := range o.grouping {
		grouped[l] = true
	}
	// The alert selects the recorded series by the total selector's matchers (regexp
	// ones only when grouped by: they are not labels of the series otherwise) and slo.
	var ms []string
	for _, m := range o.total.LabelMatchers {
		if m.Name == model.MetricNameLabel || (!grouped[m.Name] && (m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp)) {
			continue
		}
		ms = append(ms, m.String())
	}
	ms = append(ms, fmt.Sprintf(`slo=%q`, o.name))
	slices.Sort(ms)
	matchers := strings.Join(ms, ",")
	target := strconv.FormatFloat(o.target, 'f', -1, 64)
	for _, w := range ws {
		l := o.ruleLabels(o.grouping)
		l["short"] = promDuration(w.short)
		l["long"] = promDuration(w.long)
		l["severity"] = w.severity
		l["exhaustion"] = promDuration(time.Duration(o.window.Seconds()/w.factor) * time.Second)
		g.Rules = append(g.Rules, rulefmt.Rule{
			Alert: o.alert,
			Expr: fmt.Sprintf("%s{%s} > (%.f * (1-%s)) and %s{%s} > (%.f * (1-%s))",
				o.burnrateName(w.short), matchers, w.factor, target, o.burnrateName(w.long), matchers, w.factor, target),
			For:         model.Duration(w.forD),
			Labels:      l,
			Annotations: o.annotationsOrNil(),
		})
	}
	return g
}
