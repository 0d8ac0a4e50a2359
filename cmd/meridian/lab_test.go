package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/lab"
)

// TestLabControlFromAnyDirectory: `meridian lab status` run outside the repository finds
// the running lab's token in the lab directory, not relative to where it runs.
func TestLabControlFromAnyDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MERIDIAN_LAB_DIR", dir)
	t.Setenv("MERIDIAN_API_TOKEN", "")
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("lab-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer lab-token" {
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, `{"failures":[]}`)
	}))
	defer srv.Close()
	t.Chdir(t.TempDir())
	var stdout, stderr bytes.Buffer
	if code := run([]string{"lab", "status", "-lab.address", srv.URL}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "failures") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

// TestLabSecretsAndBanner: the lab makes its API token and ClickHouse HTTP password once,
// keeps them, writes the shipped SLO specs, and its banner says how to reach /clickhouse/.
func TestLabSecretsAndBanner(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MERIDIAN_CLICKHOUSE_HTTP_PASSWORD", "")
	cfg, err := parseConfig([]string{"-server.allow-no-token"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	first, err := labSecret(dir, "clickhouse-password", &cfg.ClickHouseHTTP.PasswordFile, "MERIDIAN_CLICKHOUSE_HTTP_PASSWORD")
	if err != nil || len(first) != 32 || cfg.ClickHouseHTTP.PasswordFile != filepath.Join(dir, "clickhouse-password") {
		t.Fatalf("password %q, file %q, %v", first, cfg.ClickHouseHTTP.PasswordFile, err)
	}
	var file string
	if again, _ := labSecret(dir, "clickhouse-password", &file, "MERIDIAN_CLICKHOUSE_HTTP_PASSWORD"); again != first {
		t.Fatalf("a restarted lab made a new password")
	}
	specs, err := writeSLOs(filepath.Join(dir, "slos"))
	if err != nil || len(specs) < 4 {
		t.Fatalf("specs %v, %v", specs, err)
	}
	var banner bytes.Buffer
	printBanner(&banner, cfg, filepath.Join(dir, "meridian.yaml"), "tok")
	for _, want := range []string{"/clickhouse/", "user " + cfg.ClickHouseHTTP.User, "password in " + cfg.ClickHouseHTTP.PasswordFile} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, banner.String())
		}
	}
	if strings.Contains(banner.String(), first) {
		t.Error("banner prints the password itself")
	}
}

// TestLabWorldIsValid: the lab's world passes the checks a user's inventory does.
func TestLabWorldIsValid(t *testing.T) {
	if err := lab.World().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestLabLoadCommand: `meridian lab load -duration 1m france 90` posts the request to the
// running lab; a rate that is not a number is refused before.
func TestLabLoadCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MERIDIAN_LAB_DIR", dir)
	t.Setenv("MERIDIAN_API_TOKEN", "")
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("lab-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got lab.LoadRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/lab/load" || r.Header.Get("Authorization") != "Bearer lab-token" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"lab", "load", "-lab.address", srv.URL, "-duration", "1m", "france", "90"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if want := (lab.LoadRequest{Region: "france", Service: "www", Rate: 90, Duration: time.Minute}); got != want {
		t.Fatalf("posted %+v, want %+v", got, want)
	}
	if code := run([]string{"lab", "load", "-lab.address", srv.URL, "france", "lots"}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), `rate "lots"`) {
		t.Fatalf("a rate that is not a number: exit %d, stderr %q", code, stderr.String())
	}
}
