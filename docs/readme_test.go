// Package docs holds the tests that keep the project's documents honest: each package
// README describes the package (docs/architecture.md, issue #20), and measurements
// live in BENCHMARKS.md only, where `make bench` rewrites them.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The sections every package README has, in the words of the issue: a heading may go on
// ("## Tests and benchmarks", "## Configuration (`hubble:`)"), but it starts with these.
var readmeSections = []string{"Owns", "Must not touch", "Config", "Metrics", "Tests"}

// A dated run diary: a date, or the machine's load when a figure was taken. Figures
// that go stale belong in BENCHMARKS.md.
var diaryLine = regexp.MustCompile(`(?i)\b20\d\d-\d\d-\d\d\b|load average|\bat load \d|\bload \d+(\.\d+)?[–-]`)

// packageREADMEs lists every README.md under the repository but the top-level one, the
// captured data's provenance notes (testdata/) and the example configurations' index.
func packageREADMEs(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch {
			case rel == ".git", rel == "testdata", rel == "examples", d.Name() == "node_modules", strings.HasPrefix(d.Name(), "."):
				if rel != "." {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if d.Name() == "README.md" && rel != "README.md" {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPackageREADMEsDescribe(t *testing.T) {
	root := ".."
	readmes := packageREADMEs(t, root)
	if len(readmes) < 20 {
		t.Fatalf("found %d package READMEs, want the 20 or more the tree has: %v", len(readmes), readmes)
	}
	for _, rel := range readmes {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, problem := range readmeProblems(rel, string(b)) {
			t.Errorf("%s: %s", rel, problem)
		}
	}
}

// readmeProblems says what a package README lacks or carries that it should not.
func readmeProblems(rel, text string) []string {
	var problems []string
	headings := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			for _, s := range readmeSections {
				if strings.HasPrefix(h, s) {
					headings[s] = true
				}
			}
		}
	}
	for _, s := range readmeSections {
		if !headings[s] {
			problems = append(problems, "no \"## "+s+"\" section")
		}
	}
	arch := filepath.ToSlash(strings.Repeat("../", strings.Count(filepath.ToSlash(rel), "/")) + "docs/architecture.md")
	if !strings.Contains(text, "]("+arch) {
		problems = append(problems, "no link to "+arch)
	}
	benchmarks := strings.Contains(text, "-bench") || strings.Contains(text, "Benchmark") || strings.Contains(text, "BENCH ")
	if bench := strings.TrimSuffix(arch, "docs/architecture.md") + "BENCHMARKS.md"; benchmarks && !strings.Contains(text, "]("+bench) {
		problems = append(problems, "has benchmarks but no link to "+bench+", where their figures are")
	}
	for i, line := range strings.Split(text, "\n") {
		if diaryLine.MatchString(line) {
			problems = append(problems, "line "+strconv.Itoa(i+1)+" reads as a dated run diary (move the figure to BENCHMARKS.md): "+strings.TrimSpace(line))
		}
	}
	return problems
}

// The checker itself must be able to fail: a README that only logs runs is refused for
// each thing it lacks.
func TestReadmeProblemsCatchADiary(t *testing.T) {
	diary := "# pipeline\n\n`BenchmarkPipelineEmbedded`:\n\n| run | rows/s |\n|---|---|\n| 2026-11-22, load average 18 | 751,286 |\n"
	got := readmeProblems("pipeline/README.md", diary)
	want := len(readmeSections) + 1 /* architecture link */ + 1 /* BENCHMARKS.md link */ + 1 /* the dated row */
	if len(got) != want {
		t.Fatalf("got %d problems, want %d: %q", len(got), want, got)
	}
	good := "# x\n\nPart of Meridian ([docs/architecture.md](../docs/architecture.md)).\n\n## Owns\n\n## Must not touch\n\n## Configuration\n\n## Metrics\n\n## Tests and benchmark\n\nFigures: [BENCHMARKS.md](../BENCHMARKS.md).\n"
	if got := readmeProblems("x/README.md", good); len(got) != 0 {
		t.Fatalf("a describing README was refused: %q", got)
	}
}
