// Package slo reads SLO specs (Sloth's prometheus/v1 service spec, its Kubernetes
// PrometheusServiceLevel form, OpenSLO v1alpha and Pyrra's ServiceLevelObjective) and
// generates the multi-window multi-burn-rate Prometheus rules Sloth (or, for Pyrra's
// objects, Pyrra) would generate for them.
package slo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Spec versions and kinds accepted in a spec file.
const (
	VersionPrometheusV1 = "prometheus/v1"
	k8sAPIVersion       = "sloth.slok.dev/v1"
	k8sKind             = "PrometheusServiceLevel"
	openSLOAPIVersion   = "openslo/v1alpha"
)

// Spec is one service's SLOs: Sloth's prometheus/v1 spec plus Meridian's extension
// `slo_period` (Sloth takes the period from a CLI flag; here it can live with the spec).
type Spec struct {
	Version    string            `yaml:"version"`
	Service    string            `yaml:"service"`
	Labels     map[string]string `yaml:"labels"`
	SLOPeriod  string            `yaml:"slo_period"`
	SLOPlugins *PluginChain      `yaml:"slo_plugins"`
	SLOs       []SLOSpec         `yaml:"slos"`

	// Pyrra, when set, is the Pyrra ServiceLevelObjective this spec was read from: its
	// rules are Pyrra's, and the Sloth fields above are unused but for Service (its name).
	Pyrra *PyrraSLO `yaml:"-"`

	// File is where the spec was read from, for error messages.
	File string `yaml:"-"`
	// origin is the format it was written in (sloth_slo_info's sloth_spec label).
	origin string
}

// PluginChain is Sloth's SLO plugin chain. Only plugins whose effect Meridian implements
// are accepted (see plugins in generate.go).
type PluginChain struct {
	OverridePrevious bool        `yaml:"overridePrevious"`
	Chain            []PluginRef `yaml:"chain"`
}

// PluginRef names one plugin in a chain.
type PluginRef struct {
	ID       string         `yaml:"id"`
	Priority int            `yaml:"priority"`
	Config   map[string]any `yaml:"config"`
}

// SLOSpec is one SLO of a service.
type SLOSpec struct {
	Name        string            `yaml:"name"`
	Description string            `yaml:"description"`
	Objective   float64           `yaml:"objective"`
	Labels      map[string]string `yaml:"labels"`
	SLI         SLISpec           `yaml:"sli"`
	Alerting    AlertingSpec      `yaml:"alerting"`
	Plugins     *PluginChain      `yaml:"plugins"`
}

// SLISpec is exactly one of the SLI kinds.
type SLISpec struct {
	Raw    *RawSLI    `yaml:"raw"`
	Events *EventsSLI `yaml:"events"`
	Plugin *PluginSLI `yaml:"plugin"`
}

// RawSLI is a query returning the error ratio for a window.
type RawSLI struct {
	ErrorRatioQuery string `yaml:"error_ratio_query"`
}

// EventsSLI is an error-events query and a total-events query for a window.
type EventsSLI struct {
	ErrorQuery string `yaml:"error_query"`
	TotalQuery string `yaml:"total_query"`
}

// PluginSLI is an SLI produced by a named plugin.
type PluginSLI struct {
	ID      string            `yaml:"id"`
	Options map[string]string `yaml:"options"`
}

// AlertingSpec names the alert and its labels; page and ticket alerts may be disabled.
type AlertingSpec struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
	PageAlert   AlertMeta         `yaml:"page_alert"`
	TicketAlert AlertMeta         `yaml:"ticket_alert"`
}

// AlertMeta is the per-severity part of an alert.
type AlertMeta struct {
	Disable     bool              `yaml:"disable"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// SpecError is an invalid spec: it names the file, the SLO (when one is at fault) and the field.
type SpecError struct {
	File  string
	SLO   string
	Field string
	Err   error
}

func (e *SpecError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.SLO != "" {
		fmt.Fprintf(&b, ": slo %q", e.SLO)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ": field %s", e.Field)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *SpecError) Unwrap() error { return e.Err }

// LoadFile reads every spec document of a file (a file may hold several, separated by ---).
func LoadFile(path string) ([]*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// Parse reads every spec document in b; name is used in errors.
func Parse(name string, b []byte) ([]*Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var specs []*Spec
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &SpecError{File: name, Err: err}
		}
		if n.Kind == 0 || (n.Kind == yaml.DocumentNode && len(n.Content) == 0) {
			continue
		}
		s, err := decodeDoc(name, &n)
		if err != nil {
			return nil, err
		}
		if s == nil { // an AlertWindows document or other non-SLO doc
			continue
		}
		s.File = name
		if err := s.Validate(); err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	if len(specs) == 0 {
		return nil, &SpecError{File: name, Field: "version", Err: errors.New("no SLO spec found")}
	}
	return specs, nil
}

type docHeader struct {
	Version    string `yaml:"version"`
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

func decodeDoc(name string, n *yaml.Node) (*Spec, error) {
	var h docHeader
	if err := n.Decode(&h); err != nil {
		return nil, &SpecError{File: name, Err: err}
	}
	switch {
	case h.Version == VersionPrometheusV1:
		var s Spec
		if err := decodeStrict(n, &s); err != nil {
			return nil, &SpecError{File: name, Err: err}
		}
		s.origin = VersionPrometheusV1
		return &s, nil
	case h.APIVersion == k8sAPIVersion && h.Kind == k8sKind:
		return decodeK8s(name, n)
	case h.APIVersion == openSLOAPIVersion && h.Kind == "SLO":
		return decodeOpenSLO(name, n)
	case h.APIVersion == PyrraAPIVersion && h.Kind == PyrraKind:
		return decodePyrra(name, n)
	case h.APIVersion == k8sAPIVersion && h.Kind == "AlertWindows":
		return nil, nil
	}
	return nil, &SpecError{File: name, Field: "version", Err: fmt.Errorf("unknown spec version %q (apiVersion %q, kind %q); want %q, %s %s, %s %s or %s SLO",
		h.Version, h.APIVersion, h.Kind, VersionPrometheusV1, k8sAPIVersion, k8sKind, PyrraAPIVersion, PyrraKind, openSLOAPIVersion)}
}

func decodeStrict(n *yaml.Node, v any) error {
	// Round-trip through bytes so that KnownFields rejects misspelt fields.
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// k8sDoc is Sloth's PrometheusServiceLevel (sloth.slok.dev/v1) with exactly the fields
// its CRD defines, camelCase as in the CRD. Decoded strictly, so a field Sloth's CRD does
// not have (a snake_case prometheus/v1 name, a period, a typo) is refused; kubectl's
// default strict field validation refuses it too.
type k8sDoc struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   map[string]any `yaml:"metadata"`
	Spec       struct {
		Service    string            `yaml:"service"`
		Labels     map[string]string `yaml:"labels"`
		SLOPlugins *PluginChain      `yaml:"sloPlugins"`
		SLOs       []struct {
			Name        string            `yaml:"name"`
			Description string            `yaml:"description"`
			Objective   float64           `yaml:"objective"`
			Labels      map[string]string `yaml:"labels"`
			Plugins     *PluginChain      `yaml:"plugins"`
			SLI         struct {
				Raw *struct {
					ErrorRatioQuery string `yaml:"errorRatioQuery"`
				} `yaml:"raw"`
				Events *struct {
					ErrorQuery string `yaml:"errorQuery"`
					TotalQuery string `yaml:"totalQuery"`
				} `yaml:"events"`
				Plugin *PluginSLI `yaml:"plugin"`
			} `yaml:"sli"`
			Alerting struct {
				Name        string            `yaml:"name"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
				PageAlert   AlertMeta         `yaml:"pageAlert"`
				TicketAlert AlertMeta         `yaml:"ticketAlert"`
			} `yaml:"alerting"`
		} `yaml:"slos"`
	} `yaml:"spec"`
	Status map[string]any `yaml:"status"`
}

func decodeK8s(name string, n *yaml.Node) (*Spec, error) {
	var doc k8sDoc
	if err := decodeStrict(n, &doc); err != nil {
		return nil, &SpecError{File: name, Field: "spec", Err: err}
	}
	s := &Spec{Version: VersionPrometheusV1, origin: k8sAPIVersion,
		Service: doc.Spec.Service, Labels: doc.Spec.Labels, SLOPlugins: doc.Spec.SLOPlugins}
	for _, o := range doc.Spec.SLOs {
		slo := SLOSpec{Name: o.Name, Description: o.Description, Objective: o.Objective, Labels: o.Labels, Plugins: o.Plugins,
			SLI: SLISpec{Plugin: o.SLI.Plugin},
			Alerting: AlertingSpec{Name: o.Alerting.Name, Labels: o.Alerting.Labels, Annotations: o.Alerting.Annotations,
				PageAlert: o.Alerting.PageAlert, TicketAlert: o.Alerting.TicketAlert}}
		if r := o.SLI.Raw; r != nil {
			slo.SLI.Raw = &RawSLI{ErrorRatioQuery: r.ErrorRatioQuery}
		}
		if e := o.SLI.Events; e != nil {
			slo.SLI.Events = &EventsSLI{ErrorQuery: e.ErrorQuery, TotalQuery: e.TotalQuery}
		}
		s.SLOs = append(s.SLOs, slo)
	}
	return s, nil
}

// decodeOpenSLO maps an OpenSLO v1alpha ratio SLO as Sloth does: one SLO per objective,
// named <metadata.name>-<index>, with error ratio 1 - good/total and no alerts.
func decodeOpenSLO(name string, n *yaml.Node) (*Spec, error) {
	var doc struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec struct {
			Service     string `yaml:"service"`
			Description string `yaml:"description"`
			Objectives  []struct {
				RatioMetrics struct {
					Good  struct{ Query string } `yaml:"good"`
					Total struct{ Query string } `yaml:"total"`
				} `yaml:"ratioMetrics"`
				Target float64 `yaml:"target"`
			} `yaml:"objectives"`
			TimeWindows []struct {
				Count int    `yaml:"count"`
				Unit  string `yaml:"unit"`
			} `yaml:"timeWindows"`
		} `yaml:"spec"`
	}
	if err := n.Decode(&doc); err != nil {
		return nil, &SpecError{File: name, Err: err}
	}
	s := &Spec{Version: VersionPrometheusV1, Service: doc.Spec.Service, origin: openSLOAPIVersion}
	if len(doc.Spec.TimeWindows) > 0 {
		tw := doc.Spec.TimeWindows[0]
		unit := map[string]string{"Day": "d", "Week": "w", "Hour": "h", "Minute": "m"}[tw.Unit]
		if unit == "" {
			return nil, &SpecError{File: name, Field: "spec.timeWindows.unit", Err: fmt.Errorf("unknown unit %q", tw.Unit)}
		}
		s.SLOPeriod = fmt.Sprintf("%d%s", tw.Count, unit)
	}
	for i, o := range doc.Spec.Objectives {
		s.SLOs = append(s.SLOs, SLOSpec{
			Name:        fmt.Sprintf("%s-%d", doc.Metadata.Name, i),
			Description: doc.Spec.Description,
			Objective:   o.Target * 100,
			SLI: SLISpec{Raw: &RawSLI{ErrorRatioQuery: fmt.Sprintf(`
  1 - (
    (
      %s
    )
    /
    (
      %s
    )
  )
`, o.RatioMetrics.Good.Query, o.RatioMetrics.Total.Query)}},
			Alerting: AlertingSpec{PageAlert: AlertMeta{Disable: true}, TicketAlert: AlertMeta{Disable: true}},
		})
	}
	return s, nil
}

// Period returns the SLO period; 30 days when the spec names none (Sloth's default).
func (s *Spec) Period() (time.Duration, error) {
	if s.SLOPeriod == "" {
		return 30 * 24 * time.Hour, nil
	}
	d, err := positiveDuration(s.SLOPeriod)
	if err != nil {
		return 0, &SpecError{File: s.File, Field: "slo_period", Err: err}
	}
	return d, nil
}

// positiveDuration parses a Prometheus duration (28d, 1h30m) that must be set and above zero.
func positiveDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("is required")
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: %w", s, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not a duration above zero", s)
	}
	return time.Duration(d), nil
}
