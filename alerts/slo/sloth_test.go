package slo

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

const slothDir = "../../testdata/slo/sloth"

// TestSlothEquivalence generates rules for every Sloth example spec and compares them
// with the rules Sloth itself generated: same groups, same recorded series and alerts,
// same labels and annotations, and expressions equal as parsed PromQL (so windows,
// burn factors and thresholds are compared as numbers, not text).
func TestSlothEquivalence(t *testing.T) {
	specs, _ := filepath.Glob(filepath.Join(slothDir, "*.y*ml"))
	if len(specs) < 10 {
		t.Fatalf("found %d Sloth example specs in %s, want the whole set", len(specs), slothDir)
	}
	for _, spec := range specs {
		t.Run(filepath.Base(spec), func(t *testing.T) {
			files, err := GenerateFiles([]string{spec}, nil, Options{ExtraLabels: map[string]string{"cmd": "examplesgen.sh"}})
			if err != nil {
				t.Fatal(err)
			}
			want := loadSlothGen(t, filepath.Join(slothDir, "_gen", filepath.Base(spec)))
			compareGroups(t, files[0].Groups, want)
		})
	}
}

// loadSlothGen reads a Sloth output file: a plain rule file or a PrometheusRule CRD.
func loadSlothGen(t *testing.T, path string) []rulefmt.RuleGroup {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var groups []rulefmt.RuleGroup
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc struct {
			Groups []rulefmt.RuleGroup `yaml:"groups"`
			Spec   struct {
				Groups []rulefmt.RuleGroup `yaml:"groups"`
			} `yaml:"spec"`
		}
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		groups = append(groups, doc.Groups...)
		groups = append(groups, doc.Spec.Groups...)
	}
	if len(groups) == 0 {
		t.Fatalf("%s: no rule groups", path)
	}
	// Sloth's output is a valid Prometheus rule file (except its MetricsQL example).
	if !strings.Contains(path, "victoria") {
		if err := CheckRules(groups); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return groups
}

// Labels naming the generator itself, not the SLO (sloth_mode, set by the input's
// kind, is compared).
var generatorLabels = []string{"sloth_version"}

func ruleKey(r rulefmt.Rule) string {
	if r.Record != "" {
		return "record " + r.Record + " " + r.Labels["le"] // Pyrra's latency records share a name
	}
	// Pyrra's alerts share a name and severity; their windows tell them apart.
	return "alert " + r.Alert + " " + r.Labels[LabelSeverity] + r.Labels["severity"] + " " + r.Labels["short"] + " " + r.Labels["long"] + " " + r.Labels["le"]
}

func compareGroups(t *testing.T, got, want []rulefmt.RuleGroup) {
	t.Helper()
	names := func(gs []rulefmt.RuleGroup) []string {
		var n []string
		for _, g := range gs {
			n = append(n, g.Name)
		}
		return n
	}
	if !slices.Equal(names(got), names(want)) {
		t.Fatalf("groups: got %v, want %v", names(got), names(want))
	}
	for i := range want {
		if got[i].Interval != want[i].Interval {
			t.Errorf("group %s: interval %s, want %s", want[i].Name, got[i].Interval, want[i].Interval)
		}
		index := map[string]rulefmt.Rule{}
		for _, r := range got[i].Rules {
			index[ruleKey(r)] = r
		}
		if len(got[i].Rules) != len(want[i].Rules) {
			t.Errorf("group %s: %d rules, want %d", want[i].Name, len(got[i].Rules), len(want[i].Rules))
		}
		for _, w := range want[i].Rules {
			g, ok := index[ruleKey(w)]
			if !ok {
				t.Errorf("group %s: missing %s", want[i].Name, ruleKey(w))
				continue
			}
			gl, wl := maps.Clone(g.Labels), maps.Clone(w.Labels)
			for _, l := range generatorLabels {
				delete(gl, l)
				delete(wl, l)
			}
			if !maps.Equal(gl, wl) {
				t.Errorf("%s labels:\n got %v\nwant %v", ruleKey(w), gl, wl)
			}
			if g.For != w.For {
				t.Errorf("%s for: got %s, want %s", ruleKey(w), g.For, w.For)
			}
			if !maps.Equal(g.Annotations, w.Annotations) {
				t.Errorf("%s annotations:\n got %v\nwant %v", ruleKey(w), g.Annotations, w.Annotations)
			}
			if ge, we := normalizeExpr(t, g.Expr), normalizeExpr(t, w.Expr); ge != we {
				t.Errorf("%s expr:\n got %s\nwant %s", ruleKey(w), ge, we)
			}
		}
	}
}

var spaces = regexp.MustCompile(`\s+`)

// normalizeExpr parses PromQL and prints it without parentheses (the tree keeps the
// precedence) and with constant arithmetic folded, so "(14.4 * 0.001)" equals 0.0144.
// MetricsQL that PromQL cannot parse (Sloth's VictoriaMetrics example) is compared as
// text without whitespace.
func normalizeExpr(t *testing.T, s string) string {
	e, err := promqlParser.ParseExpr(s)
	if err != nil {
		return "text:" + spaces.ReplaceAllString(s, "")
	}
	return simplify(e).String()
}

func simplify(n parser.Expr) parser.Expr {
	switch e := n.(type) {
	case *parser.ParenExpr:
		return simplify(e.Expr)
	case *parser.BinaryExpr:
		e.LHS, e.RHS = simplify(e.LHS), simplify(e.RHS)
		l, lok := e.LHS.(*parser.NumberLiteral)
		r, rok := e.RHS.(*parser.NumberLiteral)
		if lok && rok {
			switch e.Op {
			case parser.MUL:
				return &parser.NumberLiteral{Val: l.Val * r.Val}
			case parser.DIV:
				return &parser.NumberLiteral{Val: l.Val / r.Val}
			case parser.ADD:
				return &parser.NumberLiteral{Val: l.Val + r.Val}
			case parser.SUB:
				return &parser.NumberLiteral{Val: l.Val - r.Val}
			}
		}
	case *parser.AggregateExpr:
		e.Expr = simplify(e.Expr)
		if e.Param != nil {
			e.Param = simplify(e.Param)
		}
	case *parser.Call:
		for i := range e.Args {
			e.Args[i] = simplify(e.Args[i])
		}
	case *parser.SubqueryExpr:
		e.Expr = simplify(e.Expr)
	case *parser.UnaryExpr:
		e.Expr = simplify(e.Expr)
	}
	return n
}
