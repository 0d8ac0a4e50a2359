package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestReadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SECRET_TEST_ENV", "from-env")
	for _, tc := range []struct {
		name string
		src  Source
		want string
		err  string
	}{
		{"file wins", Source{File: file, Env: "SECRET_TEST_ENV"}, "from-file", ""},
		{"env without a file", Source{Env: "SECRET_TEST_ENV"}, "from-env", ""},
		{"nothing", Source{Env: "SECRET_TEST_UNSET"}, "", ""},
		{"missing file", Source{File: filepath.Join(dir, "nope"), Env: "SECRET_TEST_ENV", Field: "server.token_file"}, "", "server.token_file " + dir + "/nope: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Read(tc.src)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || v.Reveal() != tc.want {
				t.Fatalf("got %q, %v; want %q", v.Reveal(), err, tc.want)
			}
		})
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	if _, err := Read(Source{File: empty}); err == nil || !strings.Contains(err.Error(), "empty file") {
		t.Fatalf("empty file: %v", err)
	}
}

// TestNeverPrinted: every way a value is usually written out shows the redacted form.
func TestNeverPrinted(t *testing.T) {
	v := New("hunter2-value")
	type holder struct {
		Token Value `yaml:"token" json:"token"`
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %s %q %+v %#v\n", v, v, v, holder{v}, holder{v})
	slog.New(slog.NewTextHandler(&out, nil)).Info("x", "token", v, "h", holder{v})
	slog.New(slog.NewJSONHandler(&out, nil)).Info("x", "token", v)
	y, _ := yaml.Marshal(holder{v})
	j, _ := json.Marshal(holder{v})
	out.Write(y)
	out.Write(j)
	if strings.Contains(out.String(), "hunter2") {
		t.Fatalf("secret printed:\n%s", out.String())
	}
	if !strings.Contains(out.String(), Redacted) {
		t.Fatalf("no redacted marker:\n%s", out.String())
	}
}
