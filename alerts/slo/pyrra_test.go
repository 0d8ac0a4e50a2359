package slo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
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
			compareGroups(t, files[0].Groups, want)
		})
	}
}

// olderAbsentFor are the outputs taken from a Pyrra version before AbsentDuration.
var olderAbsentFor = map[string]bool{"http-latency.yaml": true}

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
	b, err := os.ReadFile(filepath.Join(pyrraDir, "http.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, old, new, field, msg string }{
		{"target over 100", `target: "99.5"`, `target: "100.5"`, "spec.target", "out of range"},
		{"target not a number", `target: "99.5"`, `target: "high"`, "spec.target", "not a number"},
		{"bad window", "window: 28d", "window: 4x", "spec.window", "not a duration"},
		{"total not a selector", `metric: http_requests_total{job="app"}`, `metric: sum(http_requests_total)`, "spec.indicator.ratio.total.metric", "not a vector selector"},
		{"bad errors PromQL", `status=~"5.."}`, `status=~"5.."`, "spec.indicator.ratio.errors.metric", "invalid PromQL"},
		{"native latency", "    ratio:", "    latencyNative: {latency: 1s, total: {metric: x}}\n    ratio:", "spec.indicator", "exactly one"},
		{"unknown field", "  window: 28d", "  windw: 28d\n  window: 28d", "spec", "windw"},
		{"bad grouping", "    ratio:\n", "    ratio:\n      grouping: [bad-label]\n", "spec.indicator.grouping", "invalid label name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("slo.yaml", []byte(strings.Replace(string(b), c.old, c.new, 1)))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "field "+c.field) || !strings.Contains(err.Error(), c.msg) || !strings.HasPrefix(err.Error(), "slo.yaml") {
				t.Errorf("error %q: want field %s and %q", err, c.field, c.msg)
			}
		})
	}
}
