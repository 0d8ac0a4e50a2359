package alerts_test

import (
	"context"
	"net/url"
	"regexp"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/template"
)

// labelRef finds the labels an annotation template reads.
var labelRef = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

// A label may be missing (an empty value is no label in Prometheus): an unmapped site,
// a probe without a service. Every alert's annotations must still read as a sentence,
// never "POP nuremberg fails probes for .". Each annotation is expanded the way the
// rules manager does, once with every label it reads and then with each one missing.
func TestAnnotationsWithMissingLabels(t *testing.T) {
	files := ruleFiles(t)
	broken := regexp.MustCompile(`  |\s[.,:;]|/\s|\s/|^\s|\s$|\b(for|of|in|from|to)\s*[.,]|<no value>`)
	checked := 0
	for _, f := range files {
		groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, parser.NewParser(parser.Options{}), nil)
		if len(errs) != 0 {
			t.Fatalf("%s: %v", f, errs)
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				// Labels every alert of the rule carries: its own, and those its
				// expression selects with a non-empty equality (sloth_service, sloth_slo).
				always := map[string]bool{}
				for k := range r.Labels {
					always[k] = true
				}
				expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
				if err != nil {
					t.Fatalf("%s: %s: %v", f, r.Alert, err)
				}
				parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
					if vs, ok := n.(*parser.VectorSelector); ok {
						for _, m := range vs.LabelMatchers {
							if m.Type == labels.MatchEqual && m.Value != "" {
								always[m.Name] = true
							}
						}
					}
					return nil
				})
				for name, text := range r.Annotations {
					var refs []string
					for _, m := range labelRef.FindAllStringSubmatch(text, -1) {
						refs = append(refs, m[1])
					}
					full := map[string]string{}
					for _, l := range refs {
						full[l] = "x" + l
					}
					cases := []map[string]string{full}
					for _, missing := range refs {
						if always[missing] {
							continue
						}
						c := map[string]string{}
						for k, v := range full {
							if k != missing {
								c[k] = v
							}
						}
						cases = append(cases, c)
					}
					for _, lbls := range cases {
						got := expand(t, r.Alert, text, lbls)
						if broken.MatchString(got) {
							t.Errorf("%s: %s %s with labels %v renders %q", f, r.Alert, name, lbls, got)
						}
						checked++
					}
				}
			}
		}
	}
	t.Logf("%d annotation renderings checked", checked)
}

func expand(t *testing.T, alert, text string, lbls map[string]string) string {
	t.Helper()
	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}"
	u, _ := url.Parse("http://localhost/prometheus")
	e := template.NewTemplateExpander(context.Background(), defs+text, "__alert_"+alert,
		template.AlertTemplateData(lbls, nil, "", promql.Sample{}), model.Now(), nil, u, nil)
	out, err := e.Expand()
	if err != nil {
		t.Fatalf("%s: %v", alert, err)
	}
	return out
}
