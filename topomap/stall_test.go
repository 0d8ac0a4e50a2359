package topomap

import (
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/pipeline"
)

// TestClientsThatNeverReadAreClosed: waves of 100 real websocket clients send hello and
// never read again while deltas stream. Half take every delta through a tiny TCP window,
// so the server's writes block; the other half filter the deltas away, so only their
// missing pongs give them away. Every one is closed within a bound, with 1008 where the
// close frame can still reach it; afterwards the server's goroutines and heap are back
// where they were; a client that reads keeps getting deltas throughout.
func TestClientsThatNeverReadAreClosed(t *testing.T) {
	cfg := fastConfig()
	cfg.ClientTimeout = 2 * time.Second // the reading client must pong in time even on a loaded machine
	cfg.History = 20                    // a full history ring early on: the heap baseline holds it
	m, srv := startMap(t, cfg, labInventory(), nil)

	// Deltas all along: 40 flow edges with ~200-byte names, counters changing every 10 ms.
	stop := make(chan struct{})
	var feeder sync.WaitGroup
	feeder.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			var recs []pipeline.Record
			for j := range 40 {
				recs = append(recs, &pipeline.FlowEdge{M: pipeline.Meta{Time: time.Now(), Cluster: "destroyer"},
					SourceNamespace: "load", SourceWorkload: fmt.Sprintf("w%02d-%s", j, strings.Repeat("x", 200)),
					DestNamespace: "load", DestWorkload: "sink", Flows: uint64(i + 1), Interval: time.Second})
			}
			m.Consume(recs)
		}
	})
	defer func() { close(stop); feeder.Wait() }()

	reader := dial(t, srv, nil)
	send(t, reader, clientMsg{Type: "hello"})
	var deltas atomic.Int64
	readerDone := make(chan error, 1)
	go func() {
		for {
			var msg serverMsg
			if err := reader.ReadJSON(&msg); err != nil {
				readerDone <- err
				return
			}
			if msg.Type == "delta" {
				deltas.Add(1)
			}
		}
	}()

	settle := func() (int, uint64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.HeapAlloc
	}
	waitUntil(t, 10*time.Second, "the history ring to fill", func() bool { return deltas.Load() > int64(2*cfg.History) })
	baseG, baseHeap := settle()
	// Closed within: the read deadline (client_timeout) plus a blocked write (at most
	// client_timeout) plus the close handshake's grace, with slack for a loaded machine.
	bound := 2*cfg.ClientTimeout + 2*closeGrace + 5*time.Second

	for wave := range 2 {
		before := deltas.Load()
		var conns []*websocket.Conn
		for i := range 100 {
			d, hello := smallWindowDialer(), clientMsg{Type: "hello"}
			if i%2 == 0 {
				d, hello.Filter = websocket.DefaultDialer, FilterSpec{Layers: []string{"world"}}
			}
			c, resp, err := d.Dial(wsURL(srv), http.Header{"Authorization": {"Bearer " + testToken}})
			if err != nil {
				t.Fatalf("wave %d: dial %d: %v (%v)", wave, i, err, resp)
			}
			if err := c.WriteJSON(hello); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c) // and never read
		}
		stalledAt := time.Now()
		// The gauge drops as each handler returns, just after the hub lets its client go.
		for m.hub.clientCount() > 1 || testutil.ToFloat64(m.metrics.clients) != 1 {
			if time.Since(stalledAt) > bound {
				t.Fatalf("wave %d: %d clients that never read still connected after %s (meridian_topomap_clients = %v, want 1: the reader)",
					wave, m.hub.clientCount()-1, bound, testutil.ToFloat64(m.metrics.clients))
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("wave %d: 100 clients that never read closed %s after the last one connected", wave, time.Since(stalledAt).Round(10*time.Millisecond))
		// What each stalled client finds when it finally reads: whatever was in flight,
		// then the end of the connection; a 1008 close frame when there was room for it.
		with1008 := 0 // of the filtering clients, whose sockets had room
		for i, c := range conns {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var err error
			for err == nil {
				_, _, err = c.ReadMessage()
			}
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce) && ce.Code == websocket.ClosePolicyViolation && strings.Contains(ce.Text, "client stopped reading"):
				if i%2 == 0 {
					with1008++
				}
			case errors.As(err, &ce) && (i%2 == 0 || ce.Code != websocket.CloseAbnormalClosure):
				t.Errorf("wave %d client %d: closed %d %q, want 1008 client stopped reading", wave, i, ce.Code, ce.Text)
			case isTimeout(err):
				t.Errorf("wave %d client %d: connection still open on the client's side", wave, i)
			}
			c.Close()
		}
		if with1008 != 50 {
			t.Errorf("wave %d: %d of the 50 clients with room in their sockets got the 1008 close frame", wave, with1008)
		}
		if got := testutil.ToFloat64(m.metrics.rejected.WithLabelValues("stalled")); got != float64(100*(wave+1)) {
			t.Errorf("wave %d: rejected_total{reason=stalled} = %v, want %d", wave, got, 100*(wave+1))
		}
		// The reader was never held up, and its goroutines and the heap went back down.
		n := deltas.Load()
		waitUntil(t, 5*time.Second, "the reader to get deltas after the wave", func() bool { return deltas.Load() > n })
		if deltas.Load() <= before {
			t.Errorf("wave %d: the reading client got no delta", wave)
		}
		var g int
		var heap uint64
		waitUntil(t, 10*time.Second, "goroutines back to the baseline", func() bool {
			g, heap = settle()
			return g <= baseG+2
		})
		if heap > baseHeap+8<<20 {
			t.Errorf("wave %d: heap %d MiB after the clients closed, %d MiB before", wave, heap>>20, baseHeap>>20)
		}
		t.Logf("wave %d: goroutines %d (baseline %d), heap %.1f MiB (baseline %.1f)", wave, g, baseG, float64(heap)/(1<<20), float64(baseHeap)/(1<<20))
	}
	select {
	case err := <-readerDone:
		t.Fatalf("the reading client was closed: %v", err)
	default:
	}
}

// waitUntil waits for cond with a deadline; no sleeps as synchronisation.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOriginMustMatchSchemeHostPort: a browser origin is scheme, host and port together.
func TestOriginMustMatchSchemeHostPort(t *testing.T) {
	cfg := fastConfig()
	cfg.AllowedOrigins = []string{"https://map.example", "http://[::1]:8080"}
	_, srv := startMap(t, cfg, labInventory(), nil)
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		origin string
		status int
	}{
		{srv.URL, http.StatusSwitchingProtocols},
		{strings.ToUpper(srv.URL), http.StatusSwitchingProtocols},
		{"https://" + host, http.StatusForbidden}, // same host and port, other scheme
		{"http://" + strings.Replace(host, "127.0.0.1", "localhost", 1), http.StatusForbidden},
		{"http://127.0.0.1:1", http.StatusForbidden},
		{"http://127.0.0.1", http.StatusForbidden},
		{"https://map.example", http.StatusSwitchingProtocols},
		{"https://map.example:443", http.StatusSwitchingProtocols},
		{"http://map.example", http.StatusForbidden},
		{"https://map.example:8443", http.StatusForbidden},
		{"http://[::1]:8080", http.StatusSwitchingProtocols},
		{"http://[::1]", http.StatusForbidden},
		{"null", http.StatusForbidden},
		{"file://" + host, http.StatusForbidden},
		{srv.URL + "/map", http.StatusForbidden},
	} {
		c, resp, err := websocket.DefaultDialer.Dial(wsURL(srv)+"?token="+testToken, http.Header{"Origin": {tc.origin}})
		if c != nil {
			c.Close()
		}
		if resp == nil {
			t.Fatalf("origin %q: no response: %v", tc.origin, err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("origin %q: status %d, want %d", tc.origin, resp.StatusCode, tc.status)
		}
	}
	bad := fastConfig()
	bad.AllowedOrigins = []string{"map.example"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "topomap.allowed_origins") {
		t.Errorf("allowed origin without a scheme: %v, want an error naming topomap.allowed_origins", err)
	}
}
