package slo

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"text/template"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// nameRE is Sloth's rule for service and SLO names: they become label values and rule
// group names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_.]*$`)

var promqlParser = parser.NewParser(parser.Options{})

// Validate checks the spec as Sloth does, naming file, SLO and field in its error.
func (s *Spec) Validate() error {
	fail := func(slo, field, format string, args ...any) error {
		return &SpecError{File: s.File, SLO: slo, Field: field, Err: fmt.Errorf(format, args...)}
	}
	if s.Pyrra != nil {
		_, err := s.Pyrra.objective(s.File)
		return err
	}
	if s.Version != VersionPrometheusV1 {
		return fail("", "version", "must be %q", VersionPrometheusV1)
	}
	if s.Service == "" {
		return fail("", "service", "is required")
	}
	if !nameRE.MatchString(s.Service) {
		return fail("", "service", "%q must match %s", s.Service, nameRE)
	}
	if err := checkLabels(s.Labels); err != nil {
		return fail("", "labels", "%v", err)
	}
	if _, err := s.Period(); err != nil {
		return err
	}
	if err := checkPlugins(s.SLOPlugins); err != nil {
		return fail("", "slo_plugins", "%v", err)
	}
	if len(s.SLOs) == 0 {
		return fail("", "slos", "at least one SLO is required")
	}
	seen := map[string]bool{}
	for i, o := range s.SLOs {
		name := o.Name
		if name == "" {
			return fail(fmt.Sprintf("#%d", i+1), "name", "is required")
		}
		if !nameRE.MatchString(name) {
			return fail(name, "name", "%q must match %s", name, nameRE)
		}
		if seen[name] {
			return fail(name, "name", "duplicate SLO name in service %q", s.Service)
		}
		seen[name] = true
		if !(o.Objective > 0 && o.Objective < 100) {
			return fail(name, "objective", "%v is out of range: must be > 0 and < 100 (a percentage)", o.Objective)
		}
		if err := checkLabels(o.Labels); err != nil {
			return fail(name, "labels", "%v", err)
		}
		if err := checkPlugins(o.Plugins); err != nil {
			return fail(name, "plugins", "%v", err)
		}
		if field, err := s.checkSLI(o.SLI); err != nil {
			return fail(name, field, "%v", err)
		}
		a := o.Alerting
		if a.Name == "" && (!a.PageAlert.Disable || !a.TicketAlert.Disable) {
			return fail(name, "alerting.name", "is required unless page_alert and ticket_alert are disabled")
		}
		for field, l := range map[string]map[string]string{"alerting.labels": a.Labels, "alerting.page_alert.labels": a.PageAlert.Labels, "alerting.ticket_alert.labels": a.TicketAlert.Labels} {
			if err := checkLabels(l); err != nil {
				return fail(name, field, "%v", err)
			}
		}
	}
	return nil
}

func (s *Spec) checkSLI(sli SLISpec) (field string, err error) {
	kinds := 0
	for _, set := range []bool{sli.Raw != nil, sli.Events != nil, sli.Plugin != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return "sli", errors.New("exactly one of raw, events or plugin is required")
	}
	switch {
	case sli.Raw != nil:
		return "sli.raw.error_ratio_query", s.checkQuery(sli.Raw.ErrorRatioQuery)
	case sli.Events != nil:
		if err := s.checkQuery(sli.Events.ErrorQuery); err != nil {
			return "sli.events.error_query", err
		}
		return "sli.events.total_query", s.checkQuery(sli.Events.TotalQuery)
	default:
		if _, ok := sliPlugins[sli.Plugin.ID]; !ok {
			return "sli.plugin.id", fmt.Errorf("unknown SLI plugin %q", sli.Plugin.ID)
		}
	}
	return "", nil
}

// checkQuery renders a query for a window and parses it as PromQL; a template key other
// than {{.window}} is an unknown window variable.
func (s *Spec) checkQuery(q string) error {
	if q == "" {
		return errors.New("query is required")
	}
	r, err := renderWindow(q, "5m")
	if err != nil {
		return err
	}
	if s.skipPromQLValidation() {
		return nil
	}
	if _, err := promqlParser.ParseExpr(r); err != nil {
		return fmt.Errorf("invalid PromQL: %w", err)
	}
	return nil
}

func renderWindow(q, window string) (string, error) {
	tpl, err := template.New("query").Option("missingkey=error").Parse(q)
	if err != nil {
		return "", fmt.Errorf("invalid template: %w", err)
	}
	var b bytes.Buffer
	if err := tpl.Execute(&b, map[string]string{"window": window}); err != nil {
		return "", fmt.Errorf("unknown window variable (only {{.window}} exists): %w", err)
	}
	return b.String(), nil
}

func checkLabels(l map[string]string) error {
	for k := range l {
		if !model.LegacyValidation.IsValidLabelName(k) {
			return fmt.Errorf("invalid label name %q", k)
		}
	}
	return nil
}
