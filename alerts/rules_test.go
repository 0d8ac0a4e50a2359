package alerts_test

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/alerts/slo"
)

var update = flag.Bool("update", false, "rewrite alerts/rules from alerts/slos")

// TestRulesCurrent fails when the committed rules under alerts/rules are not what
// `meridian slo generate -out alerts/rules alerts/slos/*.yaml` writes now.
// Run `go test ./alerts -run TestRulesCurrent -update` to regenerate them.
func TestRulesCurrent(t *testing.T) {
	t.Chdir("..") // paths in the generated headers are relative to the repository root
	specs, err := filepath.Glob("alerts/slos/*.yaml")
	if err != nil || len(specs) == 0 {
		t.Fatalf("no specs in alerts/slos: %v", err)
	}
	out := t.TempDir()
	if *update {
		out = "alerts/rules"
	}
	var stdout bytes.Buffer
	if err := slo.GenerateCmd(append([]string{"-out", out}, specs...), &stdout); err != nil {
		t.Fatal(err)
	}
	written := strings.Fields(stdout.String())
	committed, _ := filepath.Glob("alerts/rules/*.yml")
	if len(committed) != len(written) {
		t.Errorf("alerts/rules has %d files, generation writes %d: run go test ./alerts -run TestRulesCurrent -update", len(committed), len(written))
	}
	for _, p := range written {
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("alerts/rules", filepath.Base(p)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("alerts/rules/%s is not current (%v): run go test ./alerts -run TestRulesCurrent -update", filepath.Base(p), err)
		}
	}
}

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian package prometheus (make apt-test)")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ruleFiles are every committed rule file: generated from the SLO specs, and built in.
func ruleFiles(t *testing.T) []string {
	t.Helper()
	gen, _ := filepath.Glob("rules/*.yml")
	builtin, _ := filepath.Glob("builtin/*.yml")
	if len(gen) == 0 || len(builtin) == 0 {
		t.Fatal("no rule files in alerts/rules or alerts/builtin")
	}
	return append(gen, builtin...)
}

// TestPromtoolCheckRules: every committed rule file loads in a real Prometheus.
func TestPromtoolCheckRules(t *testing.T) {
	files := ruleFiles(t)
	out := promtool(t, append([]string{"check", "rules"}, files...)...)
	if strings.Count(out, "SUCCESS") != len(files) {
		t.Fatalf("promtool check rules:\n%s", out)
	}
}

// TestPromtoolCheckPyrraRules: the rules generated for every Pyrra test object (all four
// indicators) load in a real Prometheus.
func TestPromtoolCheckPyrraRules(t *testing.T) {
	specs, _ := filepath.Glob("../testdata/slo/pyrra/*.yaml")
	if len(specs) < 4 {
		t.Fatalf("found %d Pyrra objects", len(specs))
	}
	var stdout bytes.Buffer
	if err := slo.GenerateCmd(append([]string{"-out", t.TempDir()}, specs...), &stdout); err != nil {
		t.Fatal(err)
	}
	files := strings.Fields(stdout.String())
	out := promtool(t, append([]string{"check", "rules"}, files...)...)
	if len(files) != len(specs) || strings.Count(out, "SUCCESS") != len(files) {
		t.Fatalf("promtool check rules:\n%s", out)
	}
}

// TestPromtoolTestRules runs the rule unit tests in alerts/ruletests: each alert fires
// and resolves at the times the burn-rate arithmetic says.
func TestPromtoolTestRules(t *testing.T) {
	files, _ := filepath.Glob("ruletests/*.yml")
	if len(files) == 0 {
		t.Fatal("no rule tests in alerts/ruletests")
	}
	out := promtool(t, append([]string{"test", "rules"}, files...)...)
	if strings.Count(out, "SUCCESS") != len(files) {
		t.Fatalf("promtool test rules:\n%s", out)
	}
}

// Every built-in alert has a promtool test that sees it quiet before its condition,
// firing, and resolved after: an eval with no alert before the first one expecting it,
// and one after the last.
func TestBuiltinRulesTested(t *testing.T) {
	type unitTest struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				EvalTime  model.Duration `yaml:"eval_time"`
				Alertname string         `yaml:"alertname"`
				ExpAlerts []any          `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	builtin, _ := filepath.Glob("builtin/*.yml")
	for _, f := range builtin {
		groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, parser.NewParser(parser.Options{}), nil)
		if len(errs) != 0 {
			t.Fatalf("%s: %v", f, errs)
		}
		testFile := filepath.Join("ruletests", "builtin-"+filepath.Base(f))
		b, err := os.ReadFile(testFile)
		if err != nil {
			t.Fatalf("%s has no promtool test: %v", f, err)
		}
		var ut unitTest
		if err := yaml.Unmarshal(b, &ut); err != nil {
			t.Fatalf("%s: %v", testFile, err)
		}
		if len(ut.RuleFiles) != 1 || filepath.Base(ut.RuleFiles[0]) != filepath.Base(f) {
			t.Errorf("%s tests %v, want %s", testFile, ut.RuleFiles, f)
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				var quiet, firing []model.Duration
				for _, tc := range ut.Tests {
					for _, e := range tc.AlertRuleTest {
						if e.Alertname != r.Alert {
							continue
						}
						if len(e.ExpAlerts) == 0 {
							quiet = append(quiet, e.EvalTime)
						} else {
							firing = append(firing, e.EvalTime)
						}
					}
				}
				if len(firing) == 0 {
					t.Errorf("%s: no test sees %s fire", testFile, r.Alert)
					continue
				}
				first, last := slices.Min(firing), slices.Max(firing)
				if !slices.ContainsFunc(quiet, func(d model.Duration) bool { return d < first }) ||
					!slices.ContainsFunc(quiet, func(d model.Duration) bool { return d > last }) {
					t.Errorf("%s: %s needs a quiet eval before it fires (%v) and one after it resolves (%v): quiet at %v", testFile, r.Alert, first, last, quiet)
				}
			}
		}
	}
}
