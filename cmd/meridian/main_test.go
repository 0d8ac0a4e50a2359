package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/wait"
)

func TestConfigErrorsNameFileLineField(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "server:\n  listen_adress: x\n", ":2: field server.listen_adress: unknown field listen_adress"},
		{"bad value", "log_level: loud\n", `:1: field log_level: "loud" is not one of`},
		{"bad reference", "inventory:\n  sites:\n    - name: a\n  clusters:\n    - name: c\n      site: b\n", `:6: field inventory.clusters[0].site: cluster "c": unknown site "b"`},
		{"bad type", "server:\n  allow_no_token: maybe\n", ":2: field server.allow_no_token: cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			if code := run([]string{"-config.file", file}, io.Discard, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2; stderr %s", code, stderr.String())
			}
			want := "meridian: " + file + tc.want
			if got := strings.TrimSpace(stderr.String()); !strings.HasPrefix(got, want) || strings.Count(got, "\n") != 0 {
				t.Fatalf("stderr %q, want one line starting %q", got, want)
			}
		})
	}
}

func TestUnknownFlagSuggestsNearest(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"-server.listen-adress=x"}, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit %d", code)
	}
	if got := stderr.String(); got != "meridian: unknown flag -server.listen-adress; did you mean -server.listen-address?\n" {
		t.Fatalf("stderr %q", got)
	}
}

func TestHelpAndVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-server.listen-address") {
		t.Fatalf("help: exit %d, %q", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"version"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "meridian ") {
		t.Fatalf("version: exit %d, %q", code, out.String())
	}
}

// TestServe starts the modules, checks the self-observability endpoints and the API token,
// then stops them through the context as SIGTERM would.
func TestServe(t *testing.T) {
	base := startApp(t, testApp(t, serveArgs(t, "serve")...))
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "meridian_pipeline_"} {
		body, code := get(t, base+path, "")
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d %q", path, code, body)
		}
	}
	// Without -config.file there is nothing to reload, and the answer says so.
	if body, code := get(t, base+"/-/reload", "s3cret"); code != http.StatusNotFound || !strings.Contains(body, "-config.file") {
		t.Errorf("/-/reload without a file: %d %q", code, body)
	}
}

// TestCollectorRing runs with the collector ring on: the replica registers, and the
// ring's status page (behind the API token) lists it.
func TestCollectorRing(t *testing.T) {
	base := startApp(t, testApp(t, append(serveArgs(t, "ring"), "-target=collector",
		"-collector.ring.enabled", "-collector.ring.store=inmemory", "-collector.ring.instance-id=replica-1")...))
	if _, code := get(t, base+"/collector/ring", ""); code != http.StatusUnauthorized {
		t.Errorf("ring page without the token: %d", code)
	}
	wait.For(t, 10*time.Second, "the ring page listing replica-1 ACTIVE", func() error {
		if body, code := get(t, base+"/collector/ring", "s3cret"); code != 200 || !strings.Contains(body, "replica-1") || !strings.Contains(body, "ACTIVE") {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
}

// enginePath is the one embedded ClickHouse of this test process (chDB allows one per
// process); tests isolate themselves by database.
var enginePath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meridian-cmd-test")
	if err != nil {
		panic(err)
	}
	enginePath = filepath.Join(dir, "clickhouse")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// serveArgs writes the API token "s3cret" and returns the flags of a test process on
// loopback with its own database and data directories.
func serveArgs(t *testing.T, database string) []string {
	t.Helper()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"-server.listen-address=127.0.0.1:0", "-server.token-file=" + token,
		"-storage.path=" + enginePath, "-storage.database=" + database, "-pipeline.spool.path=" + filepath.Join(dir, "spool"),
		"-ruler.data-dir=" + filepath.Join(dir, "ruler"), "-hubble.state-dir=" + filepath.Join(dir, "hubble")}
}

// testApp builds the app of args, logging nowhere.
func testApp(t *testing.T, args ...string) *app {
	t.Helper()
	cfg, err := parseConfig(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return newApp(cfg, newLogger(cfg, io.Discard, new(slog.LevelVar)))
}

// startApp serves a's modules until the test ends; it returns the HTTP base URL once
// the server is ready.
func startApp(t *testing.T, a *app) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveApp(ctx, a) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return waitAddr(t, a)
}

func waitAddr(t *testing.T, a *app) string {
	t.Helper()
	var base string
	// Starting every module (the embedded engine's migrations, the ruler's TSDB) takes
	// seconds, more on a loaded machine.
	wait.For(t, 90*time.Second, "/readyz", func() error {
		if a.server == nil || a.server.Addr() == "" {
			return errors.New("the server is not listening yet")
		}
		base = "http://" + a.server.Addr()
		if body, code := get(t, base+"/readyz", ""); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	return base
}

func get(t *testing.T, url, token string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}
