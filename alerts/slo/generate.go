package slo

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/rulefmt"
)

// Label names of the generated series, Sloth's, so dashboards and tools made for Sloth
// work unchanged.
const (
	LabelID       = "sloth_id"
	LabelService  = "sloth_service"
	LabelSLO      = "sloth_slo"
	LabelWindow   = "sloth_window"
	LabelSeverity = "sloth_severity"
)

// Plugins whose effect Meridian implements.
const (
	pluginValidateVM          = "sloth.dev/contrib/validate_victoria_metrics/v1"
	pluginDenominatorCorrect  = "sloth.dev/contrib/denominator_corrected_rules/v1"
	pluginGettingStartedAvail = "getting_started_availability"
)

// corePlugins are Sloth's default chain and its core plugins that change nothing in the
// rules (debug logs, noop does nothing): listing them changes nothing.
var corePlugins = map[string]bool{
	"sloth.dev/core/debug/v1":          true,
	"sloth.dev/core/noop/v1":           true,
	"sloth.dev/core/sli_rules/v1":      true,
	"sloth.dev/core/metadata_rules/v1": true,
	"sloth.dev/core/alert_rules/v1":    true,
	"sloth.dev/core/validate/v1":       true,
	pluginValidateVM:                   true,
	pluginDenominatorCorrect:           true,
}

// sliPlugins render an SLI plugin's options into an error ratio query for a window.
var sliPlugins = map[string]func(opts map[string]string) string{
	// Sloth's examples/plugins/getting-started/availability plugin.
	pluginGettingStartedAvail: func(o map[string]string) string {
		filter := o["filter"]
		if filter != "" {
			filter += ","
		}
		return fmt.Sprintf("(\nsum(rate(http_request_duration_seconds_count{ %sjob=%q,code=~\"(5..|429)\" }[{{.window}}]))\n/\nsum(rate(http_request_duration_seconds_count{ %sjob=%q }[{{.window}}])))", filter, o["job"], filter, o["job"])
	},
}

func checkPlugins(c *PluginChain) error {
	if c == nil {
		return nil
	}
	for _, p := range c.Chain {
		if !corePlugins[p.ID] {
			return fmt.Errorf("unsupported plugin %q", p.ID)
		}
	}
	return nil
}

func (c *PluginChain) has(id string) bool {
	if c == nil {
		return false
	}
	for _, p := range c.Chain {
		if p.ID == id {
			return true
		}
	}
	return false
}

func (s *Spec) skipPromQLValidation() bool { return s.SLOPlugins.has(pluginValidateVM) }

// Options tune generation.
type Options struct {
	// Windows by SLO period; a period missing here uses GoogleWindows(period).
	Windows map[time.Duration]Windows
	// ExtraLabels are added to every generated rule (Sloth's --extra-labels).
	ExtraLabels map[string]string
	// Version fills sloth_slo_info's sloth_version label.
	Version string
	// Mode, when set, is sloth_slo_info's sloth_mode instead of the input kind's: the
	// ruler reading objects from the Kubernetes API sets Sloth's controller mode.
	Mode string
}

// ModeController is sloth_mode for rules Sloth's Kubernetes controller generates.
const ModeController = "ctrl-gen-k8s"

// slothModes is sloth_slo_info's sloth_mode for each input kind, as Sloth's generate
// command sets it.
var slothModes = map[string]string{
	VersionPrometheusV1: "cli-gen-prom",
	k8sAPIVersion:       "cli-gen-k8s",
	openSLOAPIVersion:   "cli-gen-openslo",
}

// Generate returns the rule groups for a spec: per SLO an SLI recording group, a
// metadata recording group and (unless both alerts are disabled) an alert group,
// named and labelled as Sloth names and labels them. A Pyrra objective gets the groups
// Pyrra generates (see PyrraSLO).
func Generate(s *Spec, o Options) ([]rulefmt.RuleGroup, error) {
	if s.Pyrra != nil {
		obj, err := s.Pyrra.objective(s.File)
		if err != nil {
			return nil, err
		}
		return pyrraGroups(obj), nil
	}
	period, err := s.Period()
	if err != nil {
		return nil, err
	}
	ws, ok := o.Windows[period]
	if !ok {
		ws = GoogleWindows(period)
	}
	if err := ws.validate(); err != nil {
		return nil, &SpecError{File: s.File, Field: "slo_period", Err: fmt.Errorf("unknown window set for period %s: %w", promDuration(period), err)}
	}
	var groups []rulefmt.RuleGroup
	for _, slo := range s.SLOs {
		g := sloGen{spec: s, slo: slo, ws: ws, opts: o, id: s.Service + "-" + slo.Name}
		gs, err := g.groups()
		if err != nil {
			return nil, &SpecError{File: s.File, SLO: slo.Name, Field: "sli", Err: err}
		}
		groups = append(groups, gs...)
	}
	return groups, nil
}

type sloGen struct {
	spec *Spec
	slo  SLOSpec
	ws   Windows
	opts Options
	id   string
}

func (g sloGen) idLabels() map[string]string {
	return map[string]string{LabelID: g.id, LabelService: g.spec.Service, LabelSLO: g.slo.Name}
}

// filter is the selector for this SLO's series: {sloth_id="…", sloth_service="…", sloth_slo="…"}.
func (g sloGen) filter() string {
	return fmt.Sprintf(`{%s=%q, %s=%q, %s=%q}`, LabelID, g.id, LabelService, g.spec.Service, LabelSLO, g.slo.Name)
}

func (g sloGen) labels(extra ...map[string]string) map[string]string {
	l := map[string]string{}
	maps.Copy(l, g.opts.ExtraLabels)
	maps.Copy(l, g.spec.Labels)
	maps.Copy(l, g.slo.Labels)
	for _, e := range extra {
		maps.Copy(l, e)
	}
	maps.Copy(l, g.idLabels())
	return l
}

func sliMetric(w time.Duration) string { return "slo:sli_error:ratio_rate" + promDuration(w) }

func (g sloGen) mode() string {
	if g.opts.Mode != "" {
		return g.opts.Mode
	}
	return slothModes[g.spec.origin]
}

func (g sloGen) denominatorCorrected() bool {
	return g.spec.SLOPlugins.has(pluginDenominatorCorrect) || g.slo.Plugins.has(pluginDenominatorCorrect)
}

func (g sloGen) groups() ([]rulefmt.RuleGroup, error) {
	sli := rulefmt.RuleGroup{Name: "sloth-slo-sli-recordings-" + g.id}
	for _, w := range g.ws.list() {
		expr, err := g.sliExpr(w)
		if err != nil {
			return nil, err
		}
		sli.Rules = append(sli.Rules, rulefmt.Rule{Record: sliMetric(w), Expr: expr, Labels: g.labels(map[string]string{LabelWindow: promDuration(w)})})
	}
	// The period ratio is the mean of the shortest window's ratio: one cheap series
	// instead of a rate over 30 days of raw samples (Sloth's optimisation).
	short := sliMetric(g.ws.PageQuick.ShortWindow)
	period := promDuration(g.ws.Period)
	sli.Rules = append(sli.Rules, rulefmt.Rule{
		Record: sliMetric(g.ws.Period),
		Expr: fmt.Sprintf("sum_over_time(%s%s[%s])\n/ ignoring (%s)\ncount_over_time(%s%s[%s])\n",
			short, g.filter(), period, LabelWindow, short, g.filter(), period),
		Labels: g.labels(map[string]string{LabelWindow: period}),
	})

	objective := g.slo.Objective / 100
	burn := func(metric string) string {
		return fmt.Sprintf("%s%s\n/ on(%s, %s, %s) group_left\nslo:error_budget:ratio%s\n", metric, g.filter(), LabelID, LabelSLO, LabelService, g.filter())
	}
	meta := rulefmt.RuleGroup{Name: "sloth-slo-meta-recordings-" + g.id, Rules: []rulefmt.Rule{
		{Record: "slo:objective:ratio", Expr: fmt.Sprintf("vector(%g)", objective), Labels: g.labels()},
		{Record: "slo:error_budget:ratio", Expr: fmt.Sprintf("vector(1-%g)", objective), Labels: g.labels()},
		{Record: "slo:time_period:days", Expr: fmt.Sprintf("vector(%g)", g.ws.Period.Hours()/24), Labels: g.labels()},
		{Record: "slo:current_burn_rate:ratio", Expr: burn(short), Labels: g.labels()},
		{Record: "slo:period_burn_rate:ratio", Expr: burn(sliMetric(g.ws.Period)), Labels: g.labels()},
		{Record: "slo:period_error_budget_remaining:ratio", Expr: "1 - slo:period_burn_rate:ratio" + g.filter(), Labels: g.labels()},
		{Record: "sloth_slo_info", Expr: "vector(1)", Labels: g.labels(map[string]string{
			"sloth_version":   g.opts.Version,
			"sloth_mode":      g.mode(),
			"sloth_spec":      g.spec.origin,
			"sloth_objective": strconv.FormatFloat(g.slo.Objective, 'f', -1, 64),
		})},
	}}
	if g.denominatorCorrected() {
		total := g.slo.SLI.Events.TotalQuery
		whole, _ := renderWindow(total, period)
		for _, w := range g.ws.list() {
			part, _ := renderWindow(total, promDuration(w))
			meta.Rules = append(meta.Rules, rulefmt.Rule{
				Record: "slo:numerator_correction:ratio" + promDuration(w),
				Expr:   fmt.Sprintf("(%s)/(%s)", part, whole),
				Labels: g.labels(),
			})
		}
	}
	groups := []rulefmt.RuleGroup{sli, meta}

	alerts := rulefmt.RuleGroup{Name: "sloth-slo-alerts-" + g.id}
	a := g.slo.Alerting
	if !a.PageAlert.Disable {
		alerts.Rules = append(alerts.Rules, g.alert("page", a.PageAlert, g.ws.PageQuick, g.ws.PageSlow))
	}
	if !a.TicketAlert.Disable {
		alerts.Rules = append(alerts.Rules, g.alert("ticket", a.TicketAlert, g.ws.TicketQuick, g.ws.TicketSlow))
	}
	if len(alerts.Rules) > 0 {
		groups = append(groups, alerts)
	}
	return groups, nil
}

func (g sloGen) sliExpr(w time.Duration) (string, error) {
	var tpl string
	sli := g.slo.SLI
	switch {
	case sli.Raw != nil:
		tpl = "(" + sli.Raw.ErrorRatioQuery + ")"
	case sli.Plugin != nil:
		tpl = sliPlugins[sli.Plugin.ID](sli.Plugin.Options)
	case g.denominatorCorrected():
		tpl = fmt.Sprintf("(\nslo:numerator_correction:ratio%s%s\n* on()\n%s\n)\n/\n(%s)\n", promDuration(w), g.filter(), sli.Events.ErrorQuery, sli.Events.TotalQuery)
	default:
		tpl = fmt.Sprintf("(%s)\n/\n(%s)\n", sli.Events.ErrorQuery, sli.Events.TotalQuery)
	}
	return renderWindow(tpl, promDuration(w))
}

// alert is the multi-window multi-burn-rate condition: either window pair burns faster
// than its factor times the error budget on both its long and its short window.
func (g sloGen) alert(severity string, m AlertMeta, quick, slow Window) rulefmt.Rule {
	budget := (100 - g.slo.Objective) / 100
	cond := func(w time.Duration, factor float64) string {
		return fmt.Sprintf("max(%s%s > (%g * %g)) without (%s)", sliMetric(w), g.filter(), factor, budget, LabelWindow)
	}
	qf, sf := g.ws.BurnFactor(quick), g.ws.BurnFactor(slow)
	expr := fmt.Sprintf("(\n    %s\n    and\n    %s\n)\nor\n(\n    %s\n    and\n    %s\n)\n",
		cond(quick.ShortWindow, qf), cond(quick.LongWindow, qf), cond(slow.ShortWindow, sf), cond(slow.LongWindow, sf))

	labels := map[string]string{}
	maps.Copy(labels, g.slo.Alerting.Labels)
	maps.Copy(labels, m.Labels)
	labels[LabelSeverity] = severity
	annotations := map[string]string{
		"title":   fmt.Sprintf("(%s) {{$labels.%s}} {{$labels.%s}} SLO error budget burn rate is too fast.", severity, LabelService, LabelSLO),
		"summary": fmt.Sprintf("{{$labels.%s}} {{$labels.%s}} SLO error budget burn rate is over expected.", LabelService, LabelSLO),
	}
	maps.Copy(annotations, g.slo.Alerting.Annotations)
	maps.Copy(annotations, m.Annotations)
	return rulefmt.Rule{Alert: g.slo.Alerting.Name, Expr: expr, Labels: labels, Annotations: annotations}
}

// header marks generated files so that nobody edits them by hand.
func header(sources []string) string {
	return "# Code generated by `meridian slo generate` from " + strings.Join(sources, ", ") + ". DO NOT EDIT.\n"
}
