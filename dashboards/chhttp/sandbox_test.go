package chhttp_test

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridianhq/meridian/storage/chdb"
)

// post runs sql on the endpoint with basic auth and the extra URL parameters, returning
// the status, the exception code header and the body.
func (e *endpoint) post(t *testing.T, sql string, params url.Values) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, "http://"+e.addr+prefix+"?"+params.Encode(), strings.NewReader(sql))
	req.SetBasicAuth(user, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("X-ClickHouse-Exception-Code"), string(b)
}

// A hostile client with the right password: every way to read a file, reach the network
// or look into the process is refused, and neither the secret, the host path it lives at,
// nor the engine's data directory appears in any reply.
func TestSandboxRefusesReadsOutsideTheDatabase(t *testing.T) {
	e := newEndpoint(t, 1<<20)
	var b [16]byte
	rand.Read(b[:])
	secret := "secret-" + hex.EncodeToString(b[:])
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); io.WriteString(w, secret) }))
	defer web.Close()
	q := "'" + path + "'"
	for _, sql := range []string{
		"SELECT file(" + q + ")",
		"SELECT `file`(" + q + ")",
		`SELECT "file"(` + q + `)`,
		"SELECT arrayMap(p -> file(p), [" + q + "])",
		"SELECT file(concat('" + dir + "', '/token'))",
		"WITH " + q + " AS p SELECT file(p)",
		"SELECT * FROM file(" + q + ", 'LineAsString')",
		"DESCRIBE file(" + q + ", 'LineAsString')",
		"SELECT * FROM url('" + web.URL + "', 'LineAsString')",
		"SELECT * FROM url('" + web.URL + "', 'LineAsString', 'x String')",
		"SELECT * FROM s3('" + web.URL + "/b/k', 'LineAsString')",
		"SELECT * FROM remote('127.0.0.1', system.one)",
		"SELECT * FROM executable('cat " + path + "', 'LineAsString', 'x String')",
		"SELECT * FROM merge('system', '^processes$')",
		"SELECT * FROM system.stack_trace",
		"SELECT * FROM `system`.`processes`",
		`SELECT * FROM "system" . "processes"`,
		"SELECT query FROM system.processes",
		"SELECT * FROM system.server_settings WHERE name = 'path'",
		"SHOW PROCESSLIST",
		"SELECT addressToLine(toUInt64(1))",
		"SELECT demangle('x')",
		"SELECT getServerSetting('path')",
		"SELECT * FROM system.tables",
		"SELECT data_path FROM system.databases",
	} {
		status, code, body := e.post(t, sql, nil)
		if status == 200 {
			t.Errorf("%s: ran (%q)", sql, body)
		}
		if strings.Contains(body, secret) || strings.Contains(body, dir) || strings.Contains(body, chdb.OpenPath()) {
			t.Errorf("%s: reply %q shows the secret or its path", sql, body)
		}
		t.Logf("%s -> %d code %s", sql, status, code)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the engine made %d HTTP requests", n)
	}
	// What a dashboard needs still works.
	for _, sql := range []string{
		"SELECT count() FROM tunnel_stats",
		"SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name",
		"SELECT name, type FROM system.columns WHERE table = 'tunnel_stats'",
		"SHOW TABLES",
		"SELECT number FROM numbers(3)",
		"SELECT file FROM (SELECT 1 AS file)", // a column named file is no call
	} {
		if status, _, body := e.post(t, sql, nil); status != 200 {
			t.Errorf("%s: %d %q", sql, status, body)
		}
	}
}

// Queries that would take the process's memory or read without end stop at the
// endpoint's limits, quickly, and a client's settings cannot lift them (0 would mean
// "no limit" to the engine).
func TestQueryLimits(t *testing.T) {
	e := newEndpoint(t, 1<<20)
	for _, tc := range []struct {
		name, sql string
		params    url.Values
		code      int
	}{
		{"memory bomb", "SELECT length(groupArray(number)) FROM numbers(300000000)", nil, 241},
		{"memory bomb, limit lifted by the client", "SELECT length(groupArray(number)) FROM numbers(300000000)", url.Values{"max_memory_usage": {"0"}}, 241},
		{"memory bomb, limit raised by the client", "SELECT length(groupArray(number)) FROM numbers(300000000)", url.Values{"max_memory_usage": {"100000000000"}}, 241},
		{"rows bomb", "SELECT count() FROM numbers(100000000000)", url.Values{"max_rows_to_read": {"0"}}, 158},
		{"narrowed by the client", "SELECT count() FROM numbers(1000)", url.Values{"max_rows_to_read": {"10"}}, 158},
		{"result bytes", "SELECT number FROM numbers(20000000)", url.Values{"max_result_bytes": {"0"}}, 396},
		{"result rows narrowed by the client", "SELECT number FROM numbers(10)", url.Values{"max_result_rows": {"5"}}, 396},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			status, code, body := e.post(t, tc.sql, tc.params)
			took := time.Since(start)
			if status == 200 || code != strconv.Itoa(tc.code) {
				t.Fatalf("%d code %s %.200q, want code %d", status, code, body, tc.code)
			}
			if took > 20*time.Second {
				t.Errorf("refused after %v: the limit did not stop it early", took)
			}
			t.Logf("refused in %v: %.160s", took.Round(time.Millisecond), body)
		})
	}
}
