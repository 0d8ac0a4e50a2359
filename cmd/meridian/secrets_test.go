package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridianhq/meridian/internal/testlog"
)

// TestSecretsNeverShow gives every secret of the configuration tree (each field tagged
// `secret:"ENV"`) its own value, alternately from its file and from its environment
// variable, runs every module, uses the secrets, and then looks for each value in the
// logs, /metrics, the configuration dump (/config), the answers to wrong credentials and
// the errors of a configuration that tries to hold a secret itself.
func TestSecretsNeverShow(t *testing.T) {
	dir := t.TempDir()
	secrets := map[string]string{} // env -> value
	args := []string{"-server.listen-address=127.0.0.1:0", "-log.level=debug",
		"-storage.path=" + enginePath, "-storage.database=secrets", "-pipeline.spool.path=" + filepath.Join(dir, "spool"),
		"-ruler.data-dir=" + filepath.Join(dir, "ruler"), "-hubble.state-dir=" + filepath.Join(dir, "hubble"),
		"-steering.api-listen=127.0.0.1:0", "-steering.rfc2136.server=" + closedPort(t), "-steering.rfc2136.zone=example.net.",
		"-steering.rfc2136.key-name=meridian."}
	n := 0
	for _, s := range settings() {
		if s.Secret == "" {
			continue
		}
		b := make([]byte, 24)
		rand.Read(b)
		v := hex.EncodeToString(b) // valid base64 too (a TSIG secret), and safe in a URL
		secrets[s.Secret] = v
		if n++; n%2 == 0 {
			t.Setenv(s.Secret, v)
			continue
		}
		t.Setenv(s.Secret, "")
		file := filepath.Join(dir, s.Secret)
		if err := os.WriteFile(file, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, s.Flag+"="+file)
	}
	var shown strings.Builder // everything an operator or a client could see
	var logs testlog.Buffer
	cfg, err := parseConfig(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a := newApp(cfg, newLogger(cfg, &logs, new(slog.LevelVar)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveApp(ctx, a) }()
	base := waitAddr(t, a)

	request := func(path string, set func(*http.Request), want int) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(&shown, "%s %d %v\n%s\n", path, resp.StatusCode, resp.Header, body)
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d: %s", path, resp.StatusCode, want, body)
		}
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	basic := func(pw string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(cfg.ClickHouseHTTP.User, pw) }
	}
	// The right secrets work: each was read from where it was put.
	request("/metrics", bearer(""), 200)
	request("/config", bearer(secrets["MERIDIAN_API_TOKEN"]), 200)
	request("/map/api/snapshot", bearer(secrets["MERIDIAN_TOPOMAP_TOKEN"]), 200)
	request("/clickhouse/?query=SELECT+1", basic(secrets["MERIDIAN_CLICKHOUSE_HTTP_PASSWORD"]), 200)
	// Wrong ones are refused, and the refusals are scanned too.
	request("/config", bearer(secrets["MERIDIAN_TOPOMAP_TOKEN"]), 401)
	request("/map/api/snapshot", bearer("wrong"), 401)
	request("/clickhouse/?query=SELECT+1", basic("wrong"), 403)

	// A secret written into the configuration itself is refused without being repeated.
	for i, text := range []string{"topomap:\n  token: %s\n", "storage:\n  clickhouse:\n    dsn: clickhouse://meridian:%s@127.0.0.1:9000/\n"} {
		file := filepath.Join(dir, fmt.Sprintf("bad-%d.yaml", i))
		os.WriteFile(file, []byte(fmt.Sprintf(text, secrets["MERIDIAN_API_TOKEN"])), 0o600)
		var stderr strings.Builder
		if code := run([]string{"config", "check", file}, io.Discard, &stderr); code != 1 {
			t.Errorf("config check of a file holding a secret: exit %d", code)
		}
		shown.WriteString(stderr.String())
	}
	var stderr strings.Builder
	run([]string{"-topomap.token=" + secrets["MERIDIAN_API_TOKEN"]}, io.Discard, &stderr)
	shown.WriteString(stderr.String())

	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	shown.WriteString(logs.String())
	for env, v := range secrets {
		if strings.Contains(shown.String(), v) {
			t.Errorf("the secret of $%s shows", env)
		}
	}
	if t.Failed() {
		t.Logf("shown:\n%s", shown.String())
	}
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
