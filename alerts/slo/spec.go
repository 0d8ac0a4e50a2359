// Package slo reads SLO specs (Sloth's prometheus/v1 service spec, its Kubernetes
// PrometheusServiceLevel form and OpenSLO v1alpha) and generates the multi-window
// multi-burn-rate Prometheus rules Sloth would generate for them.
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
	case h.APIVersion == k8sAPIVersion && h.Kind == "AlertWindows":
		return nil, nil
	}
	return nil, &SpecError{File: name, Field: "version", Err: fmt.Errorf("unknown spec version %q (apiVersion %q, kind %q); want %q, %s %s or %s SLO",
		h.Version, h.APIVersion, h.Kind, VersionPrometheusV1, k8sAPIVersion, k8sKind, openSLOAPIVersion)}
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

// k8sFields maps the Kubernetes CRD's camelCase field names to the prometheus/v1 names.
var k8sFields = map[string]string{
	"errorQuery":      "error_query",
	"totalQuery":      "total_query",
	"errorRatioQuery": "error_ratio_query",
	"pageAlert":       "page_alert",
	"ticketAlert":     "ticket_alert",
	"sloPlugins":      "slo_plugins",
	"sloPeriod":       "slo_period",
}

func decodeK8s(name string, n *yaml.Node) (*Spec, error) {
	var doc struct {
		Spec yaml.Node `yaml:"spec"`
	}
	if err := n.Decode(&doc); err != nil {
		return nil, &SpecError{File: name, Err: err}
	}
	renameKeys(&doc.Spec)
	var s Spec
	if err := decodeStrict(&doc.Spec, &s); err != nil {
		return nil, &SpecError{File: name, Field: "spec", Err: err}
	}
	s.Version, s.origin = VersionPrometheusV1, k8sAPIVersion
	return &s, nil
}

// renameKeys rewrites CRD field names in place, leaving user maps (labels, annotations,
// options) untouched.
func renameKeys(n *yaml.Node) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			renameKeys(c)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if to, ok := k8sFields[k.Value]; ok {
				k.Value = to
			}
			switch k.Value {
			case "labels", "annotations", "options", "config":
				continue
			}
			renameKeys(n.Content[i+1])
		}
	}
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
	d, err := model.ParseDuration(s.SLOPeriod)
	if err != nil {
		return 0, &SpecError{File: s.File, Field: "slo_period", Err: err}
	}
	return time.Duration(d), nil
}
