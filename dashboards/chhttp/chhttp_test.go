package chhttp_test

import (
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/dashboards/chhttp"
	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

const (
	user     = "grafana"
	password = "s3cret-for-tests"
	prefix   = "/clickhouse/"
)

// config is c over the flags' defaults (the limits c leaves at zero).
func config(c chhttp.Config) chhttp.Config {
	var d chhttp.Config
	d.RegisterFlags(flag.NewFlagSet("test", flag.PanicOnError))
	d.User, d.PasswordFile, d.MaxExecutionTime, d.MaxConcurrentQueries = c.User, c.PasswordFile, c.MaxExecutionTime, c.MaxConcurrentQueries
	if c.MaxResultBytes > 0 {
		d.MaxResultBytes = c.MaxResultBytes
	}
	if c.MaxMemoryUsage > 0 {
		d.MaxMemoryUsage = c.MaxMemoryUsage
	}
	return d
}

type endpoint struct {
	addr  string // host:port on 127.0.0.1
	store *storage.Store
	reg   *prometheus.Registry
	t0    time.Time
}

// newEndpoint serves a handler over a fresh migrated database holding three tunnel stats.
func newEndpoint(t testing.TB, maxResultBytes int64) *endpoint {
	t.Helper()
	store := storagetest.New(t)
	t0 := testtime.Day.Add(time.Hour + 123*time.Millisecond)
	var recs []pipeline.Record
	for i, peer := range []string{"nbg-aegis-1", "tyo-brain-1", "lon-pop-1"} {
		recs = append(recs, &pipeline.TunnelStat{
			M:          pipeline.Meta{Time: t0.Add(time.Duration(i) * time.Second), Collector: "wireguard/nyc-1", Site: "nyc", Node: "nyc-1"},
			Interface:  "wg0",
			PublicKey:  fmt.Sprintf("key%d", i),
			PeerNode:   peer,
			PeerSite:   peer[:3],
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.0.%d.0/24", i)), netip.MustParsePrefix(fmt.Sprintf("fd00::%d/128", i+1))},
			RxBytes:    uint64(1000 * (i + 1)),
			Status:     pipeline.StatusOK,
		})
	}
	native, err := storage.NewEncoder().Encode(pipeline.KindTunnelStat, recs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := store.Insert(ctx, pipeline.Block{Kind: pipeline.KindTunnelStat, Rows: len(recs), Token: "t1", Native: native}); err != nil {
		t.Fatal(err)
	}

	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h, err := chhttp.New(config(chhttp.Config{User: user, PasswordFile: pwFile, MaxExecutionTime: 20 * time.Second, MaxResultBytes: maxResultBytes, MaxConcurrentQueries: 2}),
		chhttp.Deps{Querier: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(prefix, h)
	srv := httptest.NewServer(mux) // listens on 127.0.0.1:0
	t.Cleanup(srv.Close)
	return &endpoint{addr: strings.TrimPrefix(srv.URL, "http://"), store: store, reg: reg, t0: t0}
}

func (e *endpoint) open(t *testing.T, pass string, comp clickhouse.CompressionMethod) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Protocol:    clickhouse.HTTP,
		Addr:        []string{e.addr},
		HttpUrlPath: prefix,
		Auth:        clickhouse.Auth{Username: user, Password: pass, Database: e.store.Database()},
		Compression: &clickhouse.Compression{Method: comp},
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// The endpoint, with clickhouse-go in HTTP mode as the client (the library Grafana's
// ClickHouse plugin runs on), for each compression the plugin or the library may use.
func TestClickHouseGoHTTP(t *testing.T) {
	e := newEndpoint(t, 1<<20)
	for _, comp := range []clickhouse.CompressionMethod{clickhouse.CompressionNone, clickhouse.CompressionGZIP, clickhouse.CompressionLZ4, clickhouse.CompressionZSTD} {
		t.Run(comp.String(), func(t *testing.T) {
			conn := e.open(t, password, comp)
			if err := conn.Ping(ctx(t)); err != nil {
				t.Fatalf("ping: %v", err)
			}

			rows, err := conn.Query(ctx(t), "SELECT time, site, peer_node, allowed_ips, rx_bytes FROM tunnel_stats ORDER BY time")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			if got := rows.ColumnTypes()[1].DatabaseTypeName(); got != "LowCardinality(String)" {
				t.Errorf("site column type %q, want LowCardinality(String)", got)
			}
			var n int
			for rows.Next() {
				var (
					tm    time.Time
					site  string
					peer  string
					ips   []string
					bytes uint64
				)
				if err := rows.Scan(&tm, &site, &peer, &ips, &bytes); err != nil {
					t.Fatal(err)
				}
				wantIPs := []string{fmt.Sprintf("10.0.%d.0/24", n), fmt.Sprintf("fd00::%d/128", n+1)}
				if !tm.Equal(e.t0.Add(time.Duration(n)*time.Second)) || site != "nyc" || bytes != uint64(1000*(n+1)) || fmt.Sprint(ips) != fmt.Sprint(wantIPs) {
					t.Errorf("row %d = %v %q %q %v %d", n, tm, site, peer, ips, bytes)
				}
				n++
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if n != 3 {
				t.Fatalf("got %d rows, want 3", n)
			}

			var empty []string
			if err := conn.Select(ctx(t), &empty, "SELECT site FROM tunnel_stats WHERE site = 'nowhere'"); err != nil || len(empty) != 0 {
				t.Fatalf("empty select: %v %v", empty, err)
			}
		})
	}
}

// Grafana's plugin goes through database/sql (clickhouse.OpenDB) with gzip over HTTP.
func TestDatabaseSQL(t *testing.T) {
	e := newEndpoint(t, 1<<20)
	db := clickhouse.OpenDB(&clickhouse.Options{
		Protocol:    clickhouse.HTTP,
		Addr:        []string{e.addr},
		HttpUrlPath: prefix,
		Auth:        clickhouse.Auth{Username: user, Password: password},
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionGZIP},
		Settings:    clickhouse.Settings{"limit": 0, "max_execution_time": 30},
	})
	defer db.Close()
	if err := db.PingContext(ctx(t)); err != nil {
		t.Fatal(err)
	}
	var peers uint64
	var last time.Time
	if err := db.QueryRowContext(ctx(t), "SELECT uniqExact(peer_node), max(time) FROM tunnel_stats").Scan(&peers, &last); err != nil {
		t.Fatal(err)
	}
	if peers != 3 || !last.Equal(e.t0.Add(2*time.Second)) {
		t.Fatalf("got %d peers, last %v", peers, last)
	}
}

func exceptionOf(t *testing.T, err error) *clickhouse.Exception {
	t.Helper()
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		t.Fatalf("error %v (%T) is not a ClickHouse exception", err, err)
	}
	return ex
}

func TestErrorsAndRefusals(t *testing.T) {
	e := newEndpoint(t, 1<<20)
	conn := e.open(t, password, clickhouse.CompressionNone)

	// An engine error comes back as the engine reported it.
	err := conn.QueryRow(ctx(t), "SELECT * FROM no_such_table").Scan()
	if ex := exceptionOf(t, err); ex.Code != 60 || !strings.Contains(ex.Message, "no_such_table") {
		t.Errorf("unknown table: code %d %q", ex.Code, ex.Message)
	}
	var httpErr *clickhouse.HTTPError
	if !errors.As(err, &httpErr) || httpErr.StatusCode != http.StatusNotFound {
		t.Errorf("unknown table: want HTTP 404 as ClickHouse sends, got %v", err)
	}

	refused := []string{
		"INSERT INTO tunnel_stats (site) VALUES ('evil')",
		"DROP TABLE tunnel_stats",
		"ALTER TABLE tunnel_stats DELETE WHERE 1",
		"SET readonly = 0",
		"SELECT 1; DROP TABLE tunnel_stats",
		"SELECT $$'$$; DROP TABLE tunnel_stats; SELECT $$'$$",
		"SELECT 1 /* /* */ ' */ ; DROP TABLE tunnel_stats; SELECT '",
		"SELECT $'$ ' $'$ ; DROP TABLE tunnel_stats; SELECT '",
		"SELECT a$b$ ; DROP TABLE tunnel_stats; SELECT $b$",
		"SELECT 1 #x\n; DROP TABLE tunnel_stats",
		"SELECT * FROM (SELECT * FROM file('/etc/hostname', 'LineAsString') SETTINGS readonly = 0)",
		"SELECT * FROM file('/etc/hostname', 'LineAsString')",
		"SELECT * FROM url('http://127.0.0.1:1/', 'TSV', 'a String')",
		"SELECT 1 INTO OUTFILE '/tmp/meridian-chhttp-outfile'",
	}
	for _, q := range refused {
		err := conn.Exec(ctx(t), q)
		if err == nil {
			t.Errorf("%q was not refused", q)
			continue
		}
		if ex := exceptionOf(t, err); ex.Code != 164 && ex.Code != 62 && ex.Code != 497 {
			t.Errorf("%q: code %d %q, want READONLY (164), SYNTAX_ERROR (62) or ACCESS_DENIED (497)", q, ex.Code, ex.Message)
		}
	}
	var n uint64
	if err := conn.QueryRow(ctx(t), "SELECT count() FROM tunnel_stats").Scan(&n); err != nil || n != 3 {
		t.Fatalf("after refusals: %d rows, %v; want the 3 rows untouched", n, err)
	}
	if _, err := os.Stat("/tmp/meridian-chhttp-outfile"); err == nil {
		t.Error("INTO OUTFILE wrote a file")
	}

	// A wrong password is refused before anything runs.
	bad := e.open(t, "wrong", clickhouse.CompressionNone)
	if ex := exceptionOf(t, bad.Ping(ctx(t))); ex.Code != 516 {
		t.Errorf("wrong password: code %d %q, want AUTHENTICATION_FAILED (516)", ex.Code, ex.Message)
	}
}

// The raw HTTP interface: /ping, the ways to pass credentials, FORMAT and default_format,
// HTTP compression, and error headers.
func TestRawHTTP(t *testing.T) {
	e := newEndpoint(t, 1<<20)
	base := "http://" + e.addr + prefix
	do := func(req *http.Request) (*http.Response, string) {
		t.Helper()
		req = req.WithContext(ctx(t))
		resp, err := http.DefaultTransport.RoundTrip(req) // no transparent gzip
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r io.Reader = resp.Body
		if resp.Header.Get("Content-Encoding") == "gzip" {
			if r, err = gzip.NewReader(resp.Body); err != nil {
				t.Fatal(err)
			}
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	get := func(params url.Values) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, base+"?"+params.Encode(), nil)
		return req
	}

	ping, _ := http.NewRequest(http.MethodGet, base+"ping", nil)
	if resp, body := do(ping); resp.StatusCode != 200 || body != "Ok.\n" {
		t.Errorf("/ping: %d %q", resp.StatusCode, body)
	}

	// A password in the URL is refused even when right, and not echoed.
	resp, body := do(get(url.Values{"user": {user}, "password": {password}, "query": {"SELECT 1"}}))
	if resp.StatusCode != 400 || resp.Header.Get("X-ClickHouse-Exception-Code") != "36" || !strings.Contains(body, "Password in the URL is refused") || strings.Contains(body, password) {
		t.Errorf("password in the URL: %d %q", resp.StatusCode, body)
	}

	// Basic auth with the user as a URL parameter, FORMAT in the SQL.
	req, _ := http.NewRequest(http.MethodGet, base+"?"+url.Values{"user": {user}, "query": {"SELECT count() AS n FROM tunnel_stats FORMAT JSONEachRow"}}.Encode(), nil)
	req.SetBasicAuth(user, password)
	resp, body = do(req)
	if resp.StatusCode != 200 || strings.TrimSpace(body) != `{"n":3}` || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("basic auth + FORMAT: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}

	// X-ClickHouse headers, query in the body, default_format, gzip when asked for.
	req, _ = http.NewRequest(http.MethodPost, base+"?default_format=CSV&enable_http_compression=1", strings.NewReader("SELECT peer_node FROM tunnel_stats ORDER BY time;"))
	req.Header.Set("X-ClickHouse-User", user)
	req.Header.Set("X-ClickHouse-Key", password)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, body = do(req)
	if resp.StatusCode != 200 || body != "\"nbg-aegis-1\"\n\"tyo-brain-1\"\n\"lon-pop-1\"\n" || resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("X-ClickHouse-Format") != "CSV" {
		t.Errorf("headers auth + body + CSV + gzip: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	// Basic auth; the query parameter and the body are joined as ClickHouse joins them.
	req, _ = http.NewRequest(http.MethodPost, base+"?query="+url.QueryEscape("SELECT 40 +"), strings.NewReader("2"))
	req.SetBasicAuth(user, password)
	if resp, body = do(req); resp.StatusCode != 200 || body != "42\n" {
		t.Errorf("basic auth + query param and body: %d %q", resp.StatusCode, body)
	}

	// A bearer token (the password), as clickhouse-go sends for token auth.
	req, _ = http.NewRequest(http.MethodPost, base+"?default_format=TSV", strings.NewReader("SELECT 7"))
	req.Header.Set("Authorization", "Bearer "+password)
	if resp, body = do(req); resp.StatusCode != 200 || body != "7\n" {
		t.Errorf("bearer token: %d %q", resp.StatusCode, body)
	}

	// No password: 401 with REQUIRED_PASSWORD; wrong one: 403 with AUTHENTICATION_FAILED.
	resp, body = do(get(url.Values{"query": {"SELECT 1"}}))
	if resp.StatusCode != 401 || resp.Header.Get("X-ClickHouse-Exception-Code") != "194" || !strings.HasPrefix(body, "Code: 194. DB::Exception:") {
		t.Errorf("no password: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	req, _ = http.NewRequest(http.MethodGet, base+"?query=SELECT+1", nil)
	req.Header.Set("X-ClickHouse-User", user)
	req.Header.Set("X-ClickHouse-Key", "nope")
	resp, body = do(req)
	if resp.StatusCode != 403 || resp.Header.Get("X-ClickHouse-Exception-Code") != "516" {
		t.Errorf("wrong password: %d %q", resp.StatusCode, body)
	}
	if strings.Contains(body, password) {
		t.Error("error body leaks the password")
	}

	// A refused write: 500 with READONLY, as ClickHouse answers a readonly user.
	req, _ = http.NewRequest(http.MethodPost, base, strings.NewReader("DROP TABLE tunnel_stats"))
	req.SetBasicAuth(user, password)
	resp, body = do(req)
	if resp.StatusCode != 500 || resp.Header.Get("X-ClickHouse-Exception-Code") != "164" || !strings.Contains(body, "(READONLY)") {
		t.Errorf("DROP: %d %q", resp.StatusCode, body)
	}

	if got := promtest.Sum(t, e.reg, "meridian_clickhouse_http_refused_total"); got != 4 {
		t.Errorf("refused counter = %v, want 4 (password in the URL, no password, wrong password, DROP)", got)
	}
}

// gate holds queries that select 'hold' until released, counting how many run at once.
type gate struct {
	chhttp.Querier
	entered, release chan struct{}
	mu               sync.Mutex
	running, most    int
}

func (g *gate) Query(ctx context.Context, sql, format string) ([]byte, error) {
	g.mu.Lock()
	g.running++
	g.most = max(g.most, g.running)
	g.mu.Unlock()
	defer func() { g.mu.Lock(); g.running--; g.mu.Unlock() }()
	if strings.Contains(sql, "'hold'") {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Querier.Query(ctx, sql, format)
}

// Queries beyond max_concurrent_queries wait for a slot instead of taking more engine
// connections from the pipeline's writer.
func TestConcurrencyLimit(t *testing.T) {
	store := storagetest.New(t)
	g := &gate{Querier: store, entered: make(chan struct{}), release: make(chan struct{})}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte(password), 0o600)
	reg := prometheus.NewRegistry()
	h, err := chhttp.New(config(chhttp.Config{User: user, PasswordFile: pw, MaxExecutionTime: 20 * time.Second, MaxResultBytes: 1 << 20, MaxConcurrentQueries: 1}),
		chhttp.Deps{Querier: g, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	query := func(q string) <-chan string {
		done := make(chan string, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, srv.URL, strings.NewReader(q))
			req.SetBasicAuth(user, password)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
		return done
	}
	first := query("SELECT 'hold'")
	<-g.entered
	second := query("SELECT 'next'")
	deadline := time.Now().Add(30 * time.Second)
	for promtest.Sum(t, reg, "meridian_clickhouse_http_queries_waiting") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the second query never queued")
		}
		runtime.Gosched()
	}
	close(g.release)
	if a, b := <-first, <-second; a != "200 hold\n" || b != "200 next\n" {
		t.Fatalf("responses %q, %q", a, b)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.most != 1 {
		t.Fatalf("%d queries ran at once, want 1", g.most)
	}
}
