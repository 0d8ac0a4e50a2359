package slo

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const pyrraDir = "../../testdata/slo/pyrra"

// TestPyrraEquivalence generates rules for Pyrra ServiceLevelObjectives and compares
// them, rule by rule, with the rules Pyrra generated for the same objects (its own
// tests' expected output): group names and intervals, record and alert names, labels
// (windows, severities, exhaustion), annotations, `for`, and expressions as parsed
// PromQL with constants folded (so burn factors and thresholds compare as numbers).
func TestPyrraEquivalence(t *testing.T) {
	specs, _ := filepath.Glob(filepath.Join(pyrraDir, "*.yaml"))
	if len(specs) < 2 {
		t.Fatalf("found %d Pyrra objects in %s", len(specs), pyrraDir)
	}
	for _, spec := range specs {
		t.Run(filepath.Base(spec), func(t *testing.T) {
			files, err := GenerateFiles([]string{spec}, nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckRules(files[0].Groups); err != nil {
				t.Fatal(err)
			}
			want := loadSlothGen(t, filepath.Join(pyrraDir, "_gen", filepath.Base(spec)))
			if olderAbsentFor[filepath.Base(spec)] {
				// Older Pyrra gave absent alerts the fast window's `for`; today's gives
				// the time a missing metric takes to fire the page (AbsentDuration, as
				// in the controller test's output). Check the old rule, compare the rest.
				fast := model.Duration(pyrraWindows(28 * 24 * time.Hour)[0].forD)
				for _, g := range want {
					for i, r := range g.Rules {
						if r.Alert == "SLOMetricAbsent" {
							if r.For != fast {
								t.Fatalf("%s: absent for %s, want the fast window's %s", spec, r.For, fast)
							}
							g.Rules[i].For = absentForOf(t, files[0].Groups)
						}
					}
				}
			}
			if a, ok := pyrraAdjust[filepath.Base(spec)]; ok {
				adjusted := 0
				for _, g := range files[0].Groups {
					for i, r := range g.Rules {
						e, err := promqlParser.ParseExpr(r.Expr)
						if err != nil {
							t.Fatal(err)
						}
						if a.rewrite(e) {
							g.Rules[i].Expr = e.String()
							adjusted++
						}
					}
				}
				if adjusted != a.rules {
					t.Fatalf("%s: %d rules in today's form, want %d", spec, adjusted, a.rules)
				}
			}
			compareGroups(t, files[0].Groups, want)
		})
	}
}

// olderAbsentFor are the outputs taken from a Pyrra version before AbsentDuration.
var olderAbsentFor = map[string]bool{"http-latency.yaml": true, "up-targets.yaml": true, "up-targets-grouping-regex.yaml": true}

// pyrraAdjust: where the expected output differs from today's Pyrra for the same YAML
// object in a known way, rewrite says how (on one of our expressions, reporting whether
// it applied) and rules how many rules it must apply to, so the difference is checked,
// not ignored.
var pyrraAdjust = map[string]struct {
	rewrite func(parser.Expr) bool
	rules   int
}{
	// The older Pyrra applied histogram_count and histogram_fraction to each series'
	// increase or rate; today's sums them by the grouping first (all 7 burn rates and
	// both increase records).
	"http-latency-native.yaml": {unaggregateHistograms, 9},
	// Pyrra's test builds this objective in Go without the metric-name matcher the
	// parsed `metric: up` has, so its :count and :sum records are not grouped by
	// __name__ as a real object's are.
	"up-targets.yaml":                {ungroupMetricName, 2},
	"up-targets-grouping-regex.yaml": {ungroupMetricName, 2},
}

func unaggregateHistograms(e parser.Expr) bool {
	applied := false
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if c, ok := n.(*parser.Call); ok && strings.HasPrefix(c.Func.Name, "histogram_") {
			last := len(c.Args) - 1
			if a, ok := c.Args[last].(*parser.AggregateExpr); ok && a.Op == parser.SUM && len(a.Grouping) == 0 {
				c.Args[last] = a.Expr
				applied = true
			}
		}
		return nil
	})
	return applied
}

func ungroupMetricName(e parser.Expr) bool {
	applied := false
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if a, ok := n.(*parser.AggregateExpr); ok && slices.Contains(a.Grouping, model.MetricNameLabel) {
			a.Grouping = slices.DeleteFunc(a.Grouping, func(l string) bool { return l == model.MetricNameLabel })
			applied = true
		}
		return nil
	})
	return applied
}

func absentForOf(t *testing.T, groups []rulefmt.RuleGroup) model.Duration {
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert == "SLOMetricAbsent" {
				return r.For
			}
		}
	}
	t.Fatal("no SLOMetricAbsent alert generated")
	return 0
}

// TestPyrraExportedObject: an object as `kubectl get -o yaml` prints it (server-set
// metadata, status) reads as the object itself.
func TestPyrraExportedObject(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(pyrraDir, "http.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	exported := strings.Replace(string(b), "  name: http\n", "  name: http\n  uid: 0f6c\n  resourceVersion: \"42\"\n  creationTimestamp: \"2026-01-01T00:00:00Z\"\n", 1) + "status:\n  type: PrometheusRule\n"
	a, err := Parse("exported.yaml", []byte(exported))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Parse("http.yaml", b)
	ga, _ := Generate(a[0], Options{})
	gw, _ := Generate(want[0], Options{})
	compareGroups(t, ga, gw)
}

func TestPyrraBadObjects(t *testing.T) {
	cases := []struct{ name, file, old, new, field, msg string }{
		{"target over 100", "http.yaml", `target: "99.5"`, `target: "100.5"`, "spec.target", "out of range"},
		{"target not a number", "http.yaml", `target: "99.5"`, `target: "high"`, "spec.target", "not a number"},
		{"bad window", "http.yaml", "window: 28d", "window: 4x", "spec.window", "not a duration"},
		{"zero window", "http.yaml", "window: 28d", "window: 0d", "spec.window", "above zero"},
		{"total not a selector", "http.yaml", `metric: http_requests_total{job="app"}`, `metric: sum(http_requests_total)`, "spec.indicator.ratio.total.metric", "not a vector selector"},
		{"bad errors PromQL", "http.yaml", `status=~"5.."}`, `status=~"5.."`, "spec.indicator.ratio.errors.metric", "invalid PromQL"},
		{"two indicators", "http.yaml", "    ratio:", "    latencyNative: {latency: 1s, total: {metric: x}}\n    ratio:", "spec.indicator", "exactly one"},
		{"unknown field", "http.yaml", "  window: 28d", "  windw: 28d\n  window: 28d", "spec", "windw"},
		{"bad grouping", "http.yaml", "    ratio:\n", "    ratio:\n      grouping: [bad-label]\n", "spec.indicator.grouping", "invalid label name"},
		{"native latency not a duration", "http-latency-native.yaml", "latency: 1s", "latency: fast", "spec.indicator.latencyNative.latency", "not a duration"},
		{"native latency missing", "http-latency-native.yaml", "      latency: 1s\n", "", "spec.indicator.latencyNative.latency", "is required"},
		{"native total not a selector", "http-latency-native.yaml", "metric: http_request_duration_seconds{", "metric: rate(http_request_duration_seconds{", "spec.indicator.latencyNative.total.metric", "invalid PromQL"},
		{"native unknown field", "http-latency-native.yaml", "      latency: 1s", "      latency: 1s\n      success: {metric: x}", "spec", "success"},
		{"bool gauge missing metric", "up-targets.yaml", "metric: up", "grouping: [job]", "spec.indicator.bool_gauge.metric", "is required"},
		{"bool gauge not a selector", "up-targets.yaml", "metric: up", "metric: up == 1", "spec.indicator.bool_gauge.metric", "not a vector selector"},
		{"bool gauge bad grouping", "up-targets-grouping-regex.yaml", "- instance", "- 0instance", "spec.indicator.grouping", "invalid label name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(pyrraDir, c.file))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), c.old) {
				t.Fatalf("%s has no %q", c.file, c.old)
			}
			_, err = Parse("slo.yaml", []byte(strings.Replace(string(b), c.old, c.new, 1)))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "field "+c.field) || !strings.Contains(err.Error(), c.msg) || !strings.HasPrefix(err.Error(), "slo.yaml") {
				t.Errorf("error %q: want field %s and %q", err, c.field, c.msg)
			}
		})
	}
}
