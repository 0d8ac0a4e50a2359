package slo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodSLO = `
  - name: %s
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(errors_total[{{.window}}]))
        total_query: sum(rate(requests_total[{{.window}}]))
    alerting:
      name: Burn
`

func TestBadSpecs(t *testing.T) {
	head := "version: prometheus/v1\nservice: svc\nslos:\n"
	slo := func(name string) string { return strings.Replace(goodSLO, "%s", name, 1) }
	cases := []struct {
		name, spec, slo, field, msg string
	}{
		{"objective over 100", head + strings.Replace(slo("a"), "99.9", "100.5", 1), "a", "objective", "out of range"},
		{"objective zero", head + strings.Replace(slo("a"), "99.9", "0", 1), "a", "objective", "out of range"},
		{"missing error query", head + strings.Replace(slo("a"), "error_query: sum(rate(errors_total[{{.window}}]))", "error_query: ''", 1), "a", "sli.events.error_query", "query is required"},
		{"missing total query", head + strings.Replace(slo("a"), "        total_query: sum(rate(requests_total[{{.window}}]))\n", "", 1), "a", "sli.events.total_query", "query is required"},
		{"bad promql", head + strings.Replace(slo("a"), "sum(rate(errors_total[{{.window}}]))", "sum(rate(errors_total[{{.window}}])", 1), "a", "sli.events.error_query", "invalid PromQL"},
		{"duplicate names", head + slo("a") + slo("a"), "a", "name", "duplicate"},
		{"unknown window variable", head + strings.Replace(slo("a"), "{{.window}}]))\n        total", "{{.windw}}]))\n        total", 1), "a", "sli.events.error_query", "unknown window"},
		{"unknown period unit", strings.Replace(head, "slos:", "slo_period: 30x\nslos:", 1) + slo("a"), "", "slo_period", "unknown unit"},
		{"zero period", strings.Replace(head, "slos:", "slo_period: 0s\nslos:", 1) + slo("a"), "", "slo_period", "above zero"},
		{"no SLI", head + "  - name: a\n    objective: 99\n    alerting: {name: X}\n", "a", "sli", "exactly one"},
		{"no alert name", head + strings.Replace(slo("a"), "name: Burn", "labels: {}", 1), "a", "alerting.name", "required"},
		{"misspelt field", head + strings.Replace(slo("a"), "objective:", "objectiv:", 1), "", "", "objectiv"},
		{"unknown version", "version: prometheus/v2\nservice: svc\n", "", "version", "unknown spec version"},
		// The CRD form takes exactly the fields of Sloth's CRD.
		{"CRD with a snake_case field", k8sSpec(t, "errorQuery:", "error_query:"), "", "spec", "field error_query not found"},
		{"CRD with a period", k8sSpec(t, "  service:", "  sloPeriod: 7d\n  service:"), "", "spec", "field sloPeriod not found"},
		{"CRD with prometheus/v1's alert name", k8sSpec(t, "pageAlert:", "page_alert:"), "", "spec", "field page_alert not found"},
		{"CRD with an unknown plugin", k8sSpec(t, "  slos:", "  sloPlugins: {chain: [{id: acme/v1}]}\n  slos:"), "", "slo_plugins", "unsupported plugin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte(c.spec), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := GenerateFiles([]string{path}, nil, Options{})
			if err == nil {
				t.Fatal("no error")
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *SpecError", err)
			}
			msg := err.Error()
			if se.File != path || !strings.HasPrefix(msg, path) {
				t.Errorf("error %q does not name the file %s", msg, path)
			}
			if se.SLO != c.slo || (c.slo != "" && !strings.Contains(msg, `slo "`+c.slo+`"`)) {
				t.Errorf("error %q: slo %q, want %q", msg, se.SLO, c.slo)
			}
			if se.Field != c.field || (c.field != "" && !strings.Contains(msg, "field "+c.field)) {
				t.Errorf("error %q: field %q, want %q", msg, se.Field, c.field)
			}
			if !strings.Contains(msg, c.msg) {
				t.Errorf("error %q does not say %q", msg, c.msg)
			}
		})
	}
}

// k8sSpec is Sloth's k8s-getting-started example with old replaced by new.
func k8sSpec(t *testing.T, old, new string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(slothDir, "k8s-getting-started.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%q not in the example", old)
	}
	return strings.Replace(string(b), old, new, 1)
}

func TestDuplicateAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	spec := "version: prometheus/v1\nservice: svc\nslos:\n" + strings.Replace(goodSLO, "%s", "a", 1)
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := GenerateFiles([]string{a, b}, nil, Options{})
	if err == nil || !strings.Contains(err.Error(), b) || !strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), "duplicate SLO") {
		t.Fatalf("got %v, want a duplicate error naming both files", err)
	}
}

// TestPeriods checks the burn factors: the workbook's for 30 days, Sloth's 28-day file,
// the same budget shares scaled for other periods, and a custom AlertWindows file.
func TestPeriods(t *testing.T) {
	d := 24 * time.Hour
	for _, c := range []struct {
		period time.Duration
		want   [4]float64
	}{
		{30 * d, [4]float64{14.4, 6, 3, 1}},
		{28 * d, [4]float64{13.44, 5.6, 2.8, 28.0 * 24 * 10 / 100 / 72}},
		{90 * d, [4]float64{43.2, 18, 9, 3}},
	} {
		ws := GoogleWindows(c.period)
		got := [4]float64{ws.BurnFactor(ws.PageQuick), ws.BurnFactor(ws.PageSlow), ws.BurnFactor(ws.TicketQuick), ws.BurnFactor(ws.TicketSlow)}
		for i := range got {
			if diff := got[i] - c.want[i]; diff > 1e-9 || diff < -1e-9 {
				t.Errorf("period %s factor %d: got %v, want %v", promDuration(c.period), i, got[i], c.want[i])
			}
		}
	}
	ws, err := LoadWindows(filepath.Join(slothDir, "windows", "7d.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// 8% of a 7-day budget in 1 hour: 8 * 168 / 100 / 1.
	if f := ws.BurnFactor(ws.PageQuick); f < 13.439 || f > 13.441 {
		t.Errorf("7d page quick factor %v, want 13.44", f)
	}
	// A period too short for the default windows is refused.
	spec := "version: prometheus/v1\nservice: svc\nslo_period: 2d\nslos:\n" + strings.Replace(goodSLO, "%s", "a", 1)
	path := filepath.Join(t.TempDir(), "short.yaml")
	os.WriteFile(path, []byte(spec), 0o644)
	if _, err := GenerateFiles([]string{path}, nil, Options{}); err == nil || !strings.Contains(err.Error(), "field slo_period") {
		t.Errorf("2d period: got %v, want a slo_period error", err)
	}
}
