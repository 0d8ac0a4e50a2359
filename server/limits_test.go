package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/internal/wait"
)

// needFDs raises the open-files limit to at least n or skips the test.
func needFDs(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is under the %d this test needs", lim.Max, n)
	}
	old := lim.Cur
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lim.Cur = old; syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) })
}

// attack is one hostile connection and what it does.
type attack struct {
	kind  string // idle, headers, body
	conn  net.Conn
	br    *bufio.Reader
	since time.Time     // when the server's bound for it started
	bound time.Duration // the server's timeout that must close it
}

// 2,000 connections that idle after a request, trickle their headers, or trickle a body
// they declared much larger (unauthenticated, so their 401 waits on the body), all held at
// once: each is closed by the server within its timeout, while a normal client making a
// new connection for every request is served throughout.
func TestSlowAndIdleClientsAreCutOff(t *testing.T) {
	const n = 2000
	const slack = 3 * time.Second // scheduling on a loaded 2-core machine
	needFDs(t, 2*n+512)
	t.Setenv(TokenEnv, "tok")
	cfg := defaults()
	cfg.ReadHeaderTimeout = 5 * time.Second
	cfg.ReadTimeout = 6 * time.Second
	cfg.IdleTimeout = 6 * time.Second
	cfg.MaxConnections = n + 100 // the normal client's connections fit beside the attack
	s := start(t, cfg)
	addr := s.Addr()

	// The normal client: a new connection per request, as a fresh browser or scraper.
	stop := make(chan struct{})
	var served, failed atomic.Int64
	var worst atomic.Int64
	var clientDone sync.WaitGroup
	clientDone.Add(1)
	stopClient := sync.OnceFunc(func() { close(stop); clientDone.Wait() })
	t.Cleanup(stopClient)
	go func() {
		defer clientDone.Done()
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			t0 := time.Now()
			req, _ := http.NewRequest("GET", "http://"+addr+"/api/x", nil)
			req.Header.Set("Authorization", "Bearer tok")
			resp, err := c.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "x" {
					err = fmt.Errorf("status %d body %q", resp.StatusCode, b)
				}
			}
			if err != nil {
				failed.Add(1)
				t.Errorf("normal client: %v", err)
				continue
			}
			served.Add(1)
			if d := int64(time.Since(t0)); d > worst.Load() {
				worst.Store(d)
			}
		}
	}()

	attacks := make([]*attack, n)
	for i := range attacks {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		a := &attack{conn: c, br: bufio.NewReader(c), since: time.Now()}
		switch i % 3 {
		case 0:
			a.kind, a.bound = "idle", cfg.IdleTimeout
			_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			if err == nil {
				var resp *http.Response
				if resp, err = http.ReadResponse(a.br, nil); err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			a.since = time.Now() // idle from here
		case 1:
			a.kind, a.bound = "headers", cfg.ReadHeaderTimeout
			_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
		case 2:
			a.kind, a.bound = "body", cfg.ReadTimeout
			_, err = io.WriteString(c, "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nhello")
		}
		if err != nil {
			t.Fatalf("%s connection %d: %v", a.kind, i, err)
		}
		attacks[i] = a
	}
	t.Cleanup(func() {
		for _, a := range attacks {
			a.conn.Close()
		}
	})
	// All of them held at once (the server accepts the last ones a moment after their dial).
	wait.For(t, 10*time.Second, "the attack's connections held at once", func() error {
		if open := testutil.ToFloat64(s.conns.open); open < float64(n) {
			return fmt.Errorf("%v connections open, want %d", open, n)
		}
		return nil
	})

	// Trickle: a header line or a body byte every 250 ms, as slowloris does to stay under
	// a per-read timeout; the server's deadlines are per request, so this buys nothing.
	trickleStop := make(chan struct{})
	var trickle sync.WaitGroup
	trickle.Add(1)
	stopTrickle := sync.OnceFunc(func() { close(trickleStop); trickle.Wait() })
	t.Cleanup(stopTrickle)
	go func() {
		defer trickle.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-trickleStop:
				return
			case <-tick.C:
			}
			for _, a := range attacks {
				a.conn.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				switch a.kind {
				case "headers":
					io.WriteString(a.conn, "X-Slow: 1\r\n")
				case "body":
					io.WriteString(a.conn, "x")
				}
			}
		}
	}()

	// Each connection must reach EOF (or a reset) within its bound; a read that times out
	// on the client's own, later deadline means the server kept it open.
	var wg sync.WaitGroup
	took := make([]time.Duration, n)
	for i, a := range attacks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.conn.SetReadDeadline(a.since.Add(a.bound + slack))
			_, err := io.Copy(io.Discard, a.br)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("%s connection %d still open %v after its %v bound", a.kind, i, a.bound+slack, a.bound)
				return
			}
			took[i] = time.Since(a.since)
		}()
	}
	wg.Wait()
	stopTrickle()
	stopClient()

	longest := map[string]time.Duration{}
	for i, a := range attacks {
		longest[a.kind] = max(longest[a.kind], took[i])
	}
	t.Logf("closed after at most: idle %v (bound %v), headers %v (bound %v), body %v (bound %v)",
		longest["idle"].Round(time.Millisecond), cfg.IdleTimeout, longest["headers"].Round(time.Millisecond), cfg.ReadHeaderTimeout,
		longest["body"].Round(time.Millisecond), cfg.ReadTimeout)
	t.Logf("normal client: %d requests served, %d failed, slowest %v", served.Load(), failed.Load(), time.Duration(worst.Load()).Round(time.Millisecond))
	if served.Load() < 20 {
		t.Errorf("normal client served only %d requests during the attack", served.Load())
	}
	// Every attack connection is gone: only the normal client's last ones may linger.
	wait.For(t, 5*time.Second, "the attack's connections closed", func() error {
		if open := testutil.ToFloat64(s.conns.open); open > 2 {
			return fmt.Errorf("%v connections still open", open)
		}
		return nil
	})
}

// One connection over -server.max-connections is answered 503 and closed; a freed slot
// takes a new client again.
func TestConnectionLimit(t *testing.T) {
	t.Setenv(TokenEnv, "tok")
	cfg := defaults()
	cfg.MaxConnections = 3
	s := start(t, cfg)
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A reply proves the server accepted it and holds its slot (keep-alive).
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v %v", resp, err)
		}
		held = append(held, c)
	}
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c) // no request sent: the 503 comes unasked
	if !strings.HasPrefix(string(b), "HTTP/1.1 503 ") || !strings.Contains(string(b), "too many connections") {
		t.Fatalf("connection over the limit got %q, want a 503", b)
	}
	if got := testutil.ToFloat64(s.conns.refused); got != 1 {
		t.Errorf("refused counter %v, want 1", got)
	}
	held[0].Close()
	wait.Until(t, 10*time.Second, "the closed connection's slot freed", func() bool { return testutil.ToFloat64(s.conns.open) <= 2 })
	if got := status(t, "http://"+s.Addr()+"/healthz", ""); got != 200 {
		t.Fatalf("after a slot was freed: %d", got)
	}
}

// A route's own write deadline replaces the server's: a reply slower than
// -server.write-timeout is cut off on a plain route, delivered on a route that allows
// longer, and a streaming route writes past it for as long as it streams.
func TestRouteTimeouts(t *testing.T) {
	t.Setenv(TokenEnv, "tok")
	cfg := defaults()
	cfg.WriteTimeout = 300 * time.Millisecond
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-time.After(time.Second) // the work this route does
		io.WriteString(w, "done")
	})
	s := serve(t, cfg, func(s *Server) {
		s.HandleOpen("GET /slow", slow)
		s.HandleOpen("GET /slow-allowed", slow, WriteTimeout(5*time.Second))
		s.HandleOpen("GET /stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for i := range 6 {
				fmt.Fprintf(w, "line %d\n", i)
				http.NewResponseController(w).Flush()
				<-time.After(100 * time.Millisecond)
			}
		}), Streaming())
	})
	get := func(path string) (string, error) {
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if body, err := get("/slow"); err == nil {
		t.Errorf("/slow: got %q past the server's write timeout, want the connection cut", body)
	}
	if body, err := get("/slow-allowed"); err != nil || body != "done" {
		t.Errorf("/slow-allowed: %q %v", body, err)
	}
	if body, err := get("/stream"); err != nil || strings.Count(body, "\n") != 6 {
		t.Errorf("/stream: %q %v", body, err)
	}
}

const pagePolicy = "default-src 'self'; frame-ancestors 'none'"

// Every reply carries the security headers, refusals included; a handler serving a page
// replaces the policy with its own.
func TestSecurityHeaders(t *testing.T) {
	t.Setenv(TokenEnv, "tok")
	s := serve(t, defaults(), func(s *Server) {
		s.Handle("GET /api/x", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "x") }))
		s.HandleOpen("GET /map/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Security-Policy", pagePolicy)
			io.WriteString(w, "<html>")
		}))
	})
	for _, tc := range []struct{ path, auth, csp string }{
		{"/api/x", "Bearer tok", "default-src 'none'; frame-ancestors 'none'"},
		{"/api/x", "", "default-src 'none'; frame-ancestors 'none'"},
		{"/metrics", "", "default-src 'none'; frame-ancestors 'none'"},
		{"/nowhere", "", "default-src 'none'; frame-ancestors 'none'"},
		{"/map/", "", pagePolicy},
	} {
		req, _ := http.NewRequest("GET", "http://"+s.Addr()+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s (%d): headers %v", tc.path, resp.StatusCode, h)
		}
		if got := h.Get("Content-Security-Policy"); got != tc.csp || !strings.Contains(got, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q, want %q", tc.path, got, tc.csp)
		}
	}
}
