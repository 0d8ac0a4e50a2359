package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meridianhq/meridian/internal/configfile"
)

var wantRE = regexp.MustCompile(`#.*want: (\S+)`)

// TestConfigCheckReportsEveryMistake runs `meridian config check` over a file holding each
// mistake of issue 20, marked "want: FIELD" on its line, and expects exactly those
// problems, each as FILE:LINE: field FIELD, with a non-zero exit and no stack trace.
func TestConfigCheckReportsEveryMistake(t *testing.T) {
	file := filepath.Join("testdata", "config", "mistakes.yaml")
	var want []string
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if m := wantRE.FindStringSubmatch(sc.Text()); m != nil && !strings.HasPrefix(strings.TrimSpace(sc.Text()), "#") {
			want = append(want, fmt.Sprintf("%s:%d: field %s:", file, line, m[1]))
		}
	}
	f.Close()

	var stdout, stderr bytes.Buffer
	if code := run([]string{"config", "check", file}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, stderr.String())
	}
	got := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
			t.Errorf("missing %q", w)
		}
	}
	for _, g := range got {
		if !slices.ContainsFunc(want, func(w string) bool { return strings.HasPrefix(g, w) }) {
			t.Errorf("unexpected %q", g)
		}
		if strings.Contains(g, "goroutine") || strings.Contains(g, ".go:") {
			t.Errorf("stack trace in %q", g)
		}
	}
	if !strings.Contains(stdout.String(), fmt.Sprintf("%s: FAILED, %d problem(s)", file, len(want))) {
		t.Errorf("stdout %q", stdout.String())
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", stderr.String())
	}
}

// TestListFormsAgree: every list setting reads the same as a flag, as the flag's
// comma-separated string in YAML, and as a YAML list.
func TestListFormsAgree(t *testing.T) {
	for _, tc := range []struct{ flag, value, yamlList string }{
		{"target", "collector,ruler", "target: [collector, ruler]"},
		{"geodns.vantages", "paris=127.0.1.1,tokyo", "geodns:\n  vantages: [paris=127.0.1.1, tokyo]"},
		{"ceph.mgr-urls", "http://127.0.0.1:9283/metrics,http://127.0.0.2:9283/metrics", "ceph:\n  mgr_urls:\n    - http://127.0.0.1:9283/metrics\n    - http://127.0.0.2:9283/metrics"},
		{"ruler.external-labels", "env=lab,team=sre", "ruler:\n  external_labels: {env: lab, team: sre}"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			parse := func(args []string, yamlText string) *Config {
				var c Config
				fs := flag.NewFlagSet("t", flag.ContinueOnError)
				c.RegisterFlags(fs)
				if err := fs.Parse(args); err != nil {
					t.Fatal(err)
				}
				if yamlText != "" {
					if err := configfile.Decode("t.yaml", []byte(yamlText), &c); err != nil {
						t.Fatal(err)
					}
				}
				return &c
			}
			fromFlag := parse([]string{"-" + tc.flag + "=" + tc.value}, "")
			// The YAML path of the flag, with the flag's own string as its value.
			section, field, nested := strings.Cut(strings.ReplaceAll(tc.flag, "-", "_"), ".")
			csv := section + ": " + tc.value
			if nested {
				csv = section + ":\n  " + field + ": " + strconv.Quote(tc.value)
			}
			for name, text := range map[string]string{"flag string in YAML": csv, "YAML list": tc.yamlList} {
				if got := parse(nil, text); !reflect.DeepEqual(got, fromFlag) {
					t.Errorf("%s: %q reads differently from -%s=%s", name, text, tc.flag, tc.value)
				}
			}
		})
	}
}

// TestHelpIsClean: the flag package takes a back-quoted word of a usage as the flag's
// value name, which printed "-ceph.command -s"; every flag's value name is its type.
func TestHelpIsClean(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("meridian", flag.ContinueOnError)
	c.RegisterFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		name, _ := flag.UnquoteUsage(f)
		switch name {
		case "", "string", "duration", "int", "uint", "float", "value":
		default:
			t.Errorf("-%s shows as -%s %s in -help", f.Name, f.Name, name)
		}
	})
}

// TestConfigReferenceIsCurrent: docs/config-reference.md is what `meridian config
// reference` writes from the code; regenerate it when a setting changes.
func TestConfigReferenceIsCurrent(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "..", "docs", "config-reference.md"))
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if code := run([]string{"config", "reference"}, &got, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got.String() != string(want) {
		t.Fatal("docs/config-reference.md differs from the code: go run ./cmd/meridian config reference > docs/config-reference.md")
	}
}

// TestConfigReferenceIsComplete: every setting says what it is, and every secret's file
// names its environment variable.
func TestConfigReferenceIsComplete(t *testing.T) {
	secrets := 0
	for _, s := range settings() {
		if s.Help == "" || s.Type == "" {
			t.Errorf("%s: no description (give it a flag usage, or an entry in yamlOnlyHelp)", s.Path)
		}
		if s.Secret != "" {
			secrets++
			if !strings.HasSuffix(s.Path, "_file") {
				t.Errorf("%s: a secret is held in a file, named by a *_file field", s.Path)
			}
		}
	}
	if secrets < 6 {
		t.Errorf("%d secrets tagged, want the 6 of server, topomap, storage, clickhouse_http, steering API and RFC 2136", secrets)
	}
}

// TestStartErrorsHaveNoStackTrace: a module that cannot start (here the server, without
// an API token) is reported in one line with its reason; dskit wraps the error with a
// stack trace, which slog would print with %+v.
func TestStartErrorsHaveNoStackTrace(t *testing.T) {
	t.Setenv("MERIDIAN_API_TOKEN", "")
	var stderr bytes.Buffer
	if code := run([]string{"-target=server", "-server.listen-address=127.0.0.1:0"}, io.Discard, &stderr); code != 1 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := strings.TrimSpace(stderr.String())
	if !strings.Contains(out, "no API token") || strings.Count(out, "\n") != 0 || strings.Contains(out, ".go:") {
		t.Fatalf("want one line naming the missing token, got:\n%s", out)
	}
}
