package dashboards

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Every PromQL expression (panels and variables) parses with Prometheus's parser and reads
// only series Meridian exports (the meridian_* metrics its packages define) or the SLO
// rules record (alerts/rules), plus ALERTS, which the ruler writes for those rules.
func TestPromQL(t *testing.T) {
	known := exportedSeries(t)
	for name := range recordedSeries(t) {
		known[name] = true
	}
	p := parser.NewParser(parser.Options{})
	n := 0
	for _, d := range loadDashboards(t) {
		for _, q := range d.queries() {
			if q.ds.Type != prometheusType {
				continue
			}
			n++
			expr, err := p.ParseExpr(grafanaPromQL(q.expr))
			if err != nil {
				t.Errorf("%s: %v\n%s", q.where, err, q.expr)
				continue
			}
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				vs, ok := node.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				name := vs.Name
				for _, m := range vs.LabelMatchers {
					if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
						name = m.Value
					}
				}
				if !known[name] {
					t.Errorf("%s: series %q is neither exported by Meridian nor recorded by the SLO rules", q.where, name)
				}
				return nil
			})
		}
	}
	if n == 0 {
		t.Fatal("no PromQL queries found")
	}
}

var metricLiteral = regexp.MustCompile(`"(meridian_[a-z0-9_]+)"`)

// exportedSeries collects the meridian_* metric names Meridian's packages define, as
// string literals in their (non-test) Go sources, with the _bucket/_sum/_count series of
// histograms.
func exportedSeries(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && path != ".." && (strings.HasPrefix(e.Name(), ".") || e.Name() == "node_modules" || e.Name() == "testdata") {
			return filepath.SkipDir
		}
		if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricLiteral.FindAllStringSubmatch(string(b), -1) {
			for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
				out[m[1]+suffix] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("found no meridian_* metrics in the sources")
	}
	return out
}

// recordedSeries loads the generated SLO rule files and returns the series they record,
// and ALERTS/ALERTS_FOR_STATE when they hold alerting rules.
func recordedSeries(t *testing.T) map[string]bool {
	t.Helper()
	files, _ := filepath.Glob("../alerts/rules/*.yml")
	yaml, _ := filepath.Glob("../alerts/rules/*.yaml")
	files = append(files, yaml...)
	if len(files) == 0 {
		t.Fatal("no generated SLO rule files in alerts/rules")
	}
	out := map[string]bool{}
	for _, f := range files {
		groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.Default())
		if len(errs) > 0 {
			t.Fatalf("%s: %v", f, errs)
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					out[r.Record] = true
				}
				if r.Alert != "" {
					out["ALERTS"], out["ALERTS_FOR_STATE"] = true, true
				}
			}
		}
	}
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("series recorded by %d rule files: %s", len(files), strings.Join(names, " "))
	return out
}
