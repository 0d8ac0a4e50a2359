package alerts_test

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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

// TestPromtoolCheckRules: every committed rule file loads in a real Prometheus.
func TestPromtoolCheckRules(t *testing.T) {
	files, _ := filepath.Glob("rules/*.yml")
	if len(files) == 0 {
		t.Fatal("no rule files in alerts/rules")
	}
	out := promtool(t, append([]string{"check", "rules"}, files...)...)
	if strings.Count(out, "SUCCESS") != len(files) {
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
