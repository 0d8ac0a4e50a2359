package topomap

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/pipeline"
)

type serverMsg struct {
	Type    string   `json:"type"`
	Epoch   string   `json:"epoch"`
	Seq     uint64   `json:"seq"`
	From    uint64   `json:"from"`
	Nodes   []*Node  `json:"nodes"`
	Edges   []*Edge  `json:"edges"`
	Upserts elements `json:"upserts"`
	Removes ids      `json:"removes"`
	At      int64    `json:"at"`
	Speed   float64  `json:"speed"`
	Error   string   `json:"error"`
}

func wsURL(srv *httptest.Server) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/map/ws"
}

// dial opens a websocket with the token in the Authorization header.
func dial(t *testing.T, srv *httptest.Server, d *websocket.Dialer) *websocket.Conn {
	t.Helper()
	if d == nil {
		d = websocket.DefaultDialer
	}
	c, resp, err := d.Dial(wsURL(srv), http.Header{"Authorization": {"Bearer " + testToken}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	if err := c.WriteJSON(v); err != nil {
		t.Fatal(err)
	}
}

func next(t *testing.T, c *websocket.Conn) serverMsg {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m serverMsg
	if err := c.ReadJSON(&m); err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

// until reads messages until one satisfies ok.
func until(t *testing.T, c *websocket.Conn, ok func(serverMsg) bool) serverMsg {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if m := next(t, c); ok(m) {
			return m
		}
	}
	t.Fatal("no matching message within 5 s")
	return serverMsg{}
}

func hasEdge(m serverMsg, id string) *Edge {
	for _, e := range append(m.Edges, m.Upserts.Edges...) {
		if e.ID == id {
			return e
		}
	}
	return nil
}

func tunnel(node, site, peer, peerSite, status string) *pipeline.TunnelStat {
	return &pipeline.TunnelStat{M: pipeline.Meta{Time: time.Now(), Site: site, Node: node}, Interface: "wg0",
		PeerNode: peer, PeerSite: peerSite, Status: status, RxRate: 100}
}

func fastConfig() Config {
	cfg := testConfig()
	cfg.Tick = 10 * time.Millisecond
	return cfg
}

func TestSnapshotThenDeltas(t *testing.T) {
	m, srv := startMap(t, fastConfig(), labInventory(), nil)
	c := dial(t, srv, nil)
	send(t, c, clientMsg{Type: "hello"})
	snap := next(t, c)
	if snap.Type != "snapshot" || len(snap.Nodes) == 0 {
		t.Fatalf("first message = %s with %d nodes, want a snapshot of the inventory", snap.Type, len(snap.Nodes))
	}
	m.Consume([]pipeline.Record{tunnel("tyo-1", "tokyo", "nyc-1", "nyc", pipeline.StatusOK)})
	d := until(t, c, func(m serverMsg) bool { return hasEdge(m, "tunnel:node:nyc-1|node:tyo-1") != nil })
	if d.Type != "delta" || d.Seq <= snap.Seq {
		t.Fatalf("got %s seq %d after snapshot seq %d", d.Type, d.Seq, snap.Seq)
	}
	if e := hasEdge(d, "tunnel:node:nyc-1|node:tyo-1"); e.Status != pipeline.StatusOK {
		t.Errorf("tunnel status %s, want ok", e.Status)
	}
	m.Consume([]pipeline.Record{tunnel("nyc-1", "nyc", "tyo-1", "tokyo", pipeline.StatusDown)})
	d = until(t, c, func(m serverMsg) bool { return hasEdge(m, "tunnel:node:nyc-1|node:tyo-1") != nil })
	if e := hasEdge(d, "tunnel:node:nyc-1|node:tyo-1"); e.Status != pipeline.StatusDown {
		t.Errorf("tunnel status %s after one end reports down, want down", e.Status)
	}
}

// waitSeq waits until the map has published at least seq.
func waitSeq(t *testing.T, m *Map, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.hub.mu.Lock()
		cur := m.hub.seq
		m.hub.mu.Unlock()
		if cur >= seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("seq stuck at %d, want %d", cur, seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestResumeAfterReconnect(t *testing.T) {
	cfg := fastConfig()
	cfg.History = 4
	m, srv := startMap(t, cfg, labInventory(), nil)
	c := dial(t, srv, nil)
	send(t, c, clientMsg{Type: "hello"})
	snap := next(t, c)
	c.Close()

	// Three changes while away, each in its own tick.
	peers := []string{"nyc-1", "nue-gpu-1", "lon-1"}
	for i, p := range peers {
		m.Consume([]pipeline.Record{tunnel("tyo-1", "tokyo", p, "", pipeline.StatusOK)})
		waitSeq(t, m, snap.Seq+uint64(i)+1)
	}
	c = dial(t, srv, nil)
	since := snap.Seq
	send(t, c, clientMsg{Type: "hello", Epoch: snap.Epoch, Since: &since})
	r := next(t, c)
	if r.Type != "resume" || r.From != snap.Seq {
		t.Fatalf("reconnect got %s from %d, want resume from %d", r.Type, r.From, snap.Seq)
	}
	for i, p := range peers {
		d := next(t, c)
		if d.Type != "delta" || d.Seq != snap.Seq+uint64(i)+1 {
			t.Fatalf("missed delta %d: got %s seq %d", i, d.Type, d.Seq)
		}
		if hasEdge(d, "tunnel:node:"+min(p, "tyo-1")+"|node:"+max(p, "tyo-1")) == nil {
			t.Errorf("delta %d lacks the tunnel to %s", d.Seq, p)
		}
	}
	c.Close()

	// Too far behind for the 4-delta ring, or from another server run: a fresh snapshot.
	for i := range 6 {
		m.Consume([]pipeline.Record{tunnel("nyc-1", "nyc", "lon-1", "london", []string{pipeline.StatusOK, pipeline.StatusDegraded}[i%2])})
		waitSeq(t, m, snap.Seq+uint64(len(peers)+i)+1)
	}
	for _, hello := range []clientMsg{{Type: "hello", Epoch: snap.Epoch, Since: &since}, {Type: "hello", Epoch: "other-run", Since: &since}} {
		c = dial(t, srv, nil)
		send(t, c, hello)
		if got := next(t, c); got.Type != "snapshot" || got.Seq < snap.Seq+uint64(len(peers)+6) {
			t.Errorf("hello %+v: got %s seq %d, want a current snapshot", hello, got.Type, got.Seq)
		}
		c.Close()
	}
}

// smallWindowDialer makes a client whose socket receive buffer is tiny, so a client that
// stops reading quickly backs up into the server's queue.
func smallWindowDialer() *websocket.Dialer {
	nd := &net.Dialer{Control: func(network, address string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
	}}
	return &websocket.Dialer{NetDialContext: nd.DialContext, ReadBufferSize: 1024}
}

func TestSlowClientIsResyncedNotBuffered(t *testing.T) {
	cfg := fastConfig()
	cfg.ClientBufferBytes = 64 << 10
	m, srv := startMap(t, cfg, labInventory(), nil)
	c := dial(t, srv, smallWindowDialer())
	send(t, c, clientMsg{Type: "hello"})
	first := next(t, c)

	// The client reads nothing while ~10 MB of deltas go out: 150 times its buffer, and
	// done well within the 10 s after which a client whose socket stays full is closed.
	var sc *client
	m.hub.each(func(cl *client) { sc = cl })
	var maxQueued int64
	for i := 0; i < 100; i++ {
		var recs []pipeline.Record
		for j := range 200 {
			recs = append(recs, &pipeline.FlowEdge{M: pipeline.Meta{Time: time.Now(), Cluster: "destroyer"},
				SourceNamespace: "load", SourceWorkload: "w" + string(rune('a'+j%26)) + strings.Repeat("x", j), DestNamespace: "load",
				DestWorkload: "sink", Flows: uint64(i + 1), Interval: time.Second})
		}
		m.Consume(recs)
		waitSeq(t, m, first.Seq+uint64(i)+1)
		maxQueued = max(maxQueued, sc.queued.Load())
	}
	if maxQueued > int64(cfg.ClientBufferBytes) {
		t.Errorf("server queued %d bytes for one client, limit %d", maxQueued, cfg.ClientBufferBytes)
	}
	if testutil.ToFloat64(m.metrics.slow) == 0 {
		t.Fatal("client that read nothing was never marked slow")
	}
	// Once it reads again it catches up through a fresh snapshot carrying the latest state.
	m.hub.mu.Lock()
	latest := m.hub.seq
	m.hub.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.SetReadDeadline(deadline)
		var msg serverMsg
		if err := c.ReadJSON(&msg); err != nil {
			t.Fatalf("reading after the stall: %v", err)
		}
		if msg.Type == "snapshot" && msg.Seq >= latest {
			break
		}
	}
}

func TestAuthAndOrigin(t *testing.T) {
	_, srv := startMap(t, fastConfig(), labInventory(), nil)
	cases := []struct {
		name   string
		url    string
		header http.Header
		protos []string
		status int
	}{
		{"no token", "", nil, nil, http.StatusUnauthorized},
		{"bad token", "?token=wrong", nil, nil, http.StatusUnauthorized},
		{"bad bearer", "", http.Header{"Authorization": {"Bearer " + testToken + "x"}}, nil, http.StatusUnauthorized},
		{"query token", "?token=" + testToken, nil, nil, http.StatusSwitchingProtocols},
		{"subprotocol token", "", nil, []string{Subprotocol, "bearer." + testToken}, http.StatusSwitchingProtocols},
		{"foreign origin", "?token=" + testToken, http.Header{"Origin": {"http://evil.example"}}, nil, http.StatusForbidden},
		{"own origin", "?token=" + testToken, http.Header{"Origin": {srv.URL}}, nil, http.StatusSwitchingProtocols},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := websocket.Dialer{Subprotocols: tc.protos}
			c, resp, err := d.Dial(wsURL(srv)+tc.url, tc.header)
			if c != nil {
				defer c.Close()
			}
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%v)", resp.StatusCode, tc.status, err)
			}
			if tc.protos != nil && c.Subprotocol() != Subprotocol {
				t.Errorf("subprotocol %q, want %q (never the token)", c.Subprotocol(), Subprotocol)
			}
		})
	}
	// The JSON snapshot takes the same token.
	resp, err := http.Get(srv.URL + "/map/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("snapshot without token: %d", resp.StatusCode)
	}
}

// TestBadClientMessages: every misbehaving client is closed with a code and a reason.
func TestBadClientMessages(t *testing.T) {
	_, srv := startMap(t, fastConfig(), labInventory(), nil)
	cases := []struct {
		name    string
		hello   bool
		msgType int
		payload string
		code    int
		reason  string
	}{
		{"oversized", false, websocket.TextMessage, `{"type":"hello","filter":{"sites":["` + strings.Repeat("a", 10000) + `"]}}`, websocket.CloseMessageTooBig, "message exceeds 4096 bytes"},
		{"malformed json", false, websocket.TextMessage, `{"type":"hello",`, websocket.CloseInvalidFramePayloadData, "malformed message"},
		{"trailing data", false, websocket.TextMessage, `{"type":"hello"}{"type":"filter"}`, websocket.CloseInvalidFramePayloadData, "malformed message: trailing data"},
		{"unknown field", false, websocket.TextMessage, `{"type":"hello","sinse":3}`, websocket.CloseInvalidFramePayloadData, "malformed message"},
		{"not hello first", false, websocket.TextMessage, `{"type":"filter"}`, websocket.ClosePolicyViolation, "first message must be hello"},
		{"binary", false, websocket.BinaryMessage, `{"type":"hello"}`, websocket.CloseUnsupportedData, "only JSON text"},
		{"unknown layer", false, websocket.TextMessage, `{"type":"hello","filter":{"layers":["bogus"]}}`, websocket.CloseUnsupportedData, `unknown layer "bogus"`},
		{"unknown type later", true, websocket.TextMessage, `{"type":"subscribe"}`, websocket.CloseUnsupportedData, `unknown message type "subscribe"`},
		{"oversized later", true, websocket.TextMessage, strings.Repeat(" ", 1<<20), websocket.CloseMessageTooBig, "message exceeds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, srv, nil)
			if tc.hello {
				send(t, c, clientMsg{Type: "hello"})
				if m := next(t, c); m.Type != "snapshot" {
					t.Fatalf("got %s", m.Type)
				}
			}
			if err := c.WriteMessage(tc.msgType, []byte(tc.payload)); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				_, _, err := c.ReadMessage()
				if err == nil {
					continue // deltas still in flight
				}
				var ce *websocket.CloseError
				if !errors.As(err, &ce) {
					t.Fatalf("connection ended without a close frame: %v", err)
				}
				if ce.Code != tc.code || !strings.Contains(ce.Text, tc.reason) {
					t.Fatalf("closed %d %q, want %d %q", ce.Code, ce.Text, tc.code, tc.reason)
				}
				return
			}
		})
	}
}

func TestFilters(t *testing.T) {
	m, srv := startMap(t, fastConfig(), labInventory(), nil)
	m.Consume(labRecords(time.Now()))
	var recs []pipeline.Record
	for _, e := range bookinfoFlowEdges(t, "destroyer", "nyc") {
		recs = append(recs, e)
	}
	m.Consume(recs)
	m.tick()
	c := dial(t, srv, nil)
	send(t, c, clientMsg{Type: "hello", Filter: FilterSpec{Layers: []string{"services"}, Clusters: []string{"destroyer"}}})
	snap := next(t, c)
	if len(snap.Edges) == 0 {
		t.Fatal("filtered snapshot has no flows")
	}
	for _, n := range snap.Nodes {
		if n.Cluster != "destroyer" || (n.Kind != KindWorkload && n.Kind != KindCluster) {
			t.Errorf("filter services/destroyer let through %s %s", n.Kind, n.ID)
		}
	}
	for _, e := range snap.Edges {
		if e.Kind != KindFlow {
			t.Errorf("filter let through edge %s", e.ID)
		}
	}
	// A tunnel change is not for this client; a filter change brings a new snapshot.
	m.Consume([]pipeline.Record{tunnel("tyo-1", "tokyo", "lon-1", "london", pipeline.StatusDown)})
	send(t, c, clientMsg{Type: "filter", Filter: FilterSpec{Sites: []string{"tokyo"}}})
	for {
		msg := next(t, c)
		if msg.Type == "delta" && hasEdge(msg, "tunnel:node:lon-1|node:tyo-1") != nil {
			t.Fatal("services-only client got a tunnel delta")
		}
		if msg.Type == "snapshot" {
			if hasEdge(msg, "tunnel:node:lon-1|node:tyo-1") == nil {
				t.Fatal("snapshot after filter change lacks the tokyo tunnel")
			}
			for _, n := range msg.Nodes {
				if n.Site != "tokyo" {
					t.Errorf("sites=tokyo snapshot has %s at %q", n.ID, n.Site)
				}
			}
			break
		}
	}
	// The JSON endpoint filters the same way.
	req, _ := http.NewRequestWithContext(context.Background(), "GET", srv.URL+"/map/api/snapshot?layers=tunnel,site&sites=tokyo", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var js serverMsg
	if err := json.NewDecoder(resp.Body).Decode(&js); err != nil || js.Type != "snapshot" {
		t.Fatalf("snapshot endpoint: %v %s", err, js.Type)
	}
	if len(js.Nodes) != 1 || js.Nodes[0].ID != "site:tokyo" || len(js.Edges) != 4 {
		t.Errorf("snapshot?layers=tunnel,site&sites=tokyo = %d nodes, %d edges; want site:tokyo and its 4 tunnels", len(js.Nodes), len(js.Edges))
	}
}

// TestCachedSnapshotReplay: a client arriving after the cached snapshot gets it plus the
// deltas since, in order, and ends up with the current state.
func TestCachedSnapshotReplay(t *testing.T) {
	m, srv := startMap(t, fastConfig(), labInventory(), nil)
	a := dial(t, srv, nil)
	send(t, a, clientMsg{Type: "hello"})
	first := next(t, a) // encodes and caches the snapshot at first.Seq
	m.Consume([]pipeline.Record{tunnel("tyo-1", "tokyo", "nyc-1", "nyc", pipeline.StatusDown)})
	waitSeq(t, m, first.Seq+1)

	b := dial(t, srv, nil)
	send(t, b, clientMsg{Type: "hello"})
	snap := next(t, b)
	if snap.Type != "snapshot" {
		t.Fatalf("got %s", snap.Type)
	}
	seq := snap.Seq
	if e := hasEdge(snap, "tunnel:node:nyc-1|node:tyo-1"); e != nil && e.Status == pipeline.StatusDown {
		return // a fresh encoding already had it
	}
	for {
		d := next(t, b)
		if d.Type != "delta" || d.Seq != seq+1 {
			t.Fatalf("after snapshot seq %d got %s seq %d", seq, d.Type, d.Seq)
		}
		seq = d.Seq
		if e := hasEdge(d, "tunnel:node:nyc-1|node:tyo-1"); e != nil && e.Status == pipeline.StatusDown {
			return
		}
	}
}
