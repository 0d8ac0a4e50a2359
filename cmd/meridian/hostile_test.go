package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/lab"
)

// TestHostileClients runs the whole process (the lab's world, the embedded engine, the
// GeoDNS, the HTTP listener) under the attacks of issue #25, one after the other, while a
// resolver asks the GeoDNS every 20 ms: each attack is refused or bounded, and every DNS
// answer is the right POP, in time. The engine and the GeoDNS share the process, so a
// query that took its memory would take DNS down with it.
func TestHostileClients(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs, _ := os.Create(filepath.Join(t.TempDir(), "meridian.log"))
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	const token, chPassword = "hostile-token", "grafana-s3cret"
	l, err := lab.Start(ctx, lab.Config{ListenAddress: "127.0.0.1:0", Testdata: "../../testdata"}, token, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-l.Done() }() // the lab's namespaces and daemons go before the test ends
	dir := t.TempDir()
	tokenFile, pwFile := filepath.Join(dir, "token"), filepath.Join(dir, "ch-password")
	os.WriteFile(tokenFile, []byte(token), 0o600)
	os.WriteFile(pwFile, []byte(chPassword), 0o600)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", amtest.FreePort(t))
	cfg, err := parseConfig([]string{
		"-server.listen-address=127.0.0.1:0", "-server.token-file=" + tokenFile,
		"-server.read-header-timeout=2s", "-server.read-timeout=3s", "-server.idle-timeout=3s",
		"-clickhouse-http.password-file=" + pwFile,
		"-storage.path=" + enginePath, "-storage.database=hostile", "-pipeline.spool.path=" + filepath.Join(dir, "spool"),
		"-ruler.data-dir=" + filepath.Join(dir, "ruler"), "-hubble.state-dir=" + filepath.Join(dir, "hubble"),
		"-steering.dns.listen=" + dnsAddr, "-steering.dns.zone=" + lab.Zone,
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, base := serveOverLab(t, cfg, l, logger)

	// The resolver: France must get Nuremberg's VIP, every time, within a second.
	ask := func() (string, time.Duration, error) {
		m := new(dns.Msg)
		m.SetQuestion("api."+lab.Zone, dns.TypeA)
		m.SetEdns0(1232, false)
		p := netip.MustParsePrefix(franceSubnet)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(p.Bits()), Address: p.Addr().AsSlice()})
		c := &dns.Client{Timeout: time.Second}
		r, rtt, err := c.Exchange(m, dnsAddr)
		if err != nil {
			return "", 0, err
		}
		if len(r.Answer) != 1 {
			return "", rtt, fmt.Errorf("%d answers, rcode %s", len(r.Answer), dns.RcodeToString[r.Rcode])
		}
		a, _ := r.Answer[0].(*dns.A)
		if a == nil {
			return "", rtt, fmt.Errorf("answer %v", r.Answer[0])
		}
		return a.A.String(), rtt, nil
	}
	watch(t, time.Now(), []check{{"steady: France is answered from Nuremberg", 60 * time.Second, func() bool {
		ip, _, err := ask()
		return err == nil && ip == nurembergVIP
	}}})
	var asked, wrong atomic.Int64
	var slowest atomic.Int64
	var firstWrong atomic.Value
	stopDNS := make(chan struct{})
	var dnsDone sync.WaitGroup
	dnsDone.Add(1)
	go func() {
		defer dnsDone.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopDNS:
				return
			case <-tick.C:
			}
			ip, rtt, err := ask()
			asked.Add(1)
			if err == nil && ip != nurembergVIP {
				err = fmt.Errorf("answered %s", ip)
			}
			if err != nil {
				wrong.Add(1)
				firstWrong.CompareAndSwap(nil, err.Error())
			}
			if int64(rtt) > slowest.Load() {
				slowest.Store(int64(rtt))
			}
		}
	}()
	stopResolver := sync.OnceFunc(func() { close(stopDNS); dnsDone.Wait() })
	defer stopResolver()

	sql := func(q string, params url.Values) (int, string, time.Duration) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/clickhouse/?"+params.Encode(), strings.NewReader(q))
		if params.Get("password") == "" {
			req.SetBasicAuth("grafana", chPassword)
		}
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}

	// SQL: the API token through file(), introspection, the password in the URL.
	for _, q := range []string{"SELECT file('" + tokenFile + "')", "SELECT * FROM system.stack_trace", "SELECT * FROM merge('system', '^processes$')"} {
		if code, body, _ := sql(q, nil); code == 200 || strings.Contains(body, token) || strings.Contains(body, dir) {
			t.Errorf("%s: %d %q", q, code, body)
		}
	}
	if code, body, _ := sql("SELECT 1", url.Values{"user": {"grafana"}, "password": {chPassword}}); code != 400 || strings.Contains(body, chPassword) {
		t.Errorf("password in the URL: %d %q", code, body)
	}
	// SQL: three memory bombs, each stopped by max_memory_usage.
	for i := range 3 {
		code, body, took := sql("SELECT length(groupArray(number)) FROM numbers(300000000)", url.Values{"max_memory_usage": {"0"}})
		if code == 200 || !strings.Contains(body, "MEMORY_LIMIT_EXCEEDED") {
			t.Errorf("memory bomb %d: %d %.200q", i, code, body)
		}
		t.Logf("memory bomb %d refused in %v", i, took.Round(time.Millisecond))
	}

	// HTTP: 1,000 connections idling after a request or trickling their headers, held
	// at once; every one closed within its timeout while /healthz is served.
	const n = 1000
	addr := strings.TrimPrefix(base, "http://")
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer c.Close()
		if i%2 == 0 {
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		} else {
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
		}
		conns[i] = c
	}
	if body, code := get(t, base+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz beside %d held connections: %d %q", n, code, body)
	}
	floodStart := time.Now()
	var closed sync.WaitGroup
	var open atomic.Int64
	for _, c := range conns {
		closed.Add(1)
		go func() {
			defer closed.Done()
			c.SetReadDeadline(time.Now().Add(cfg.Server.IdleTimeout + 5*time.Second))
			_, err := io.Copy(io.Discard, bufio.NewReader(c))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				open.Add(1)
			}
		}()
	}
	closed.Wait()
	if k := open.Load(); k > 0 {
		t.Errorf("%d of %d slow or idle connections still open after their timeout + 5 s", k, n)
	}
	t.Logf("%d slow and idle connections closed within %v", n, time.Since(floodStart).Round(time.Millisecond))

	stopResolver()
	t.Logf("GeoDNS during the attacks: %d queries, %d wrong or unanswered, slowest %v", asked.Load(), wrong.Load(), time.Duration(slowest.Load()).Round(time.Microsecond))
	if w := wrong.Load(); w > 0 {
		t.Errorf("GeoDNS gave %d wrong or no answers of %d during the attacks; first: %v", w, asked.Load(), firstWrong.Load())
	}
	if asked.Load() < 50 {
		t.Errorf("only %d DNS queries ran during the attacks", asked.Load())
	}
}
