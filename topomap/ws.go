package topomap

import (
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meridianhq/meridian/internal/jsonbody"
)

// Subprotocol is the websocket subprotocol the map speaks. Browsers, which cannot set
// headers on a websocket, may pass the token as a second subprotocol "bearer.<token>".
const Subprotocol = "meridian.topomap.v1"

const (
	helloTimeout = 10 * time.Second
	maxWriteWait = 10 * time.Second

	// sendBufferBytes caps the kernel's send buffer per client (loopback autotuning grows
	// it to megabytes): a client that stops reading then blocks the writer, and is closed,
	// after a bounded amount of memory, not after the kernel's own limit.
	sendBufferBytes = 256 << 10

	maxSpeed = 3600 // playback: at most an hour of the past per second

	closeGrace      = time.Second
	closeDrainBytes = 4 << 20
)

// clientMsg is every message a client may send.
type clientMsg struct {
	Type   string     `json:"type"` // "hello" (first, once), "filter", "at" (a past instant) or "live"
	Epoch  string     `json:"epoch,omitempty"`
	Since  *uint64    `json:"since,omitempty"` // hello: last seq applied, to resume
	Filter FilterSpec `json:"filter"`
	At     int64      `json:"at,omitempty"`    // hello, at: a past instant, unix ms
	Speed  float64    `json:"speed,omitempty"` // hello, at: play forward at this speed (0: paused)
}

// closeError closes a connection with a code and a reason the client can read; metric
// is the rejected_total reason ("message" when empty).
type closeError struct {
	code   int
	reason string
	metric string
}

func (e *closeError) Error() string { return fmt.Sprintf("close %d: %s", e.code, e.reason) }

// requestToken finds the token in the Authorization header, the bearer.<token>
// subprotocol or the token query parameter.
func requestToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		return strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	}
	for _, p := range websocket.Subprotocols(r) {
		if t, ok := strings.CutPrefix(p, "bearer."); ok {
			return t
		}
	}
	return r.URL.Query().Get("token")
}

// authorized compares in constant time so the token cannot be guessed byte by byte.
func (m *Map) authorized(r *http.Request) bool {
	if m.cfg.Anonymous {
		return true
	}
	if m.token.Empty() {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(requestToken(r)), []byte(m.token.Reveal())) == 1
}

// checkOrigin allows non-browser clients (no Origin), the page's own origin and the
// configured ones. An origin is scheme, host and port: http://map.example is not
// https://map.example, whose page an attacker on the network cannot script.
func (m *Map) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	got, ok := originKey(origin)
	if !ok {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if own, _ := originKey(scheme + "://" + r.Host); got == own {
		return true
	}
	return slices.ContainsFunc(m.cfg.AllowedOrigins, func(a string) bool {
		k, ok := originKey(a)
		return ok && k == got
	})
}

// originKey is origin as "scheme://host:port", lower case, with the scheme's default port
// made explicit; ok is false for anything but an http(s) origin ("null", a path, ...).
func originKey(origin string) (key string, ok bool) {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.User != nil || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	port := map[string]string{"http": "80", "https": "443"}[scheme]
	if port == "" {
		return "", false
	}
	if u.Port() == "" {
		host = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	return scheme + "://" + host, true
}

func (m *Map) serveWS(w http.ResponseWriter, r *http.Request) {
	if !m.authorized(r) {
		m.metrics.rejected.WithLabelValues("auth").Inc()
		m.log.Warn("topomap websocket: bad or missing token", "remote", r.RemoteAddr)
		http.Error(w, "topomap: bad or missing token", http.StatusUnauthorized)
		return
	}
	if !m.checkOrigin(r) {
		m.metrics.rejected.WithLabelValues("origin").Inc()
		m.log.Warn("topomap websocket: origin not allowed", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"))
		http.Error(w, "topomap: origin not allowed", http.StatusForbidden)
		return
	}
	up := websocket.Upgrader{
		ReadBufferSize: 4096, WriteBufferSize: 32 << 10,
		Subprotocols: []string{Subprotocol},
		CheckOrigin:  func(*http.Request) bool { return true }, // checked above
	}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the client
	}
	if tc, ok := conn.NetConn().(*net.TCPConn); ok {
		tc.SetWriteBuffer(sendBufferBytes)
	}
	m.metrics.clients.Inc()
	defer m.metrics.clients.Dec()
	s := &session{m: m, conn: conn, remote: r.RemoteAddr}
	s.run()
}

// session is one websocket connection: a reader for client messages and a writer that
// drains the client's bounded queue.
type session struct {
	m      *Map
	conn   *websocket.Conn
	remote string
	c      *client
	player *player

	modeMu sync.Mutex // held to switch between live and past, and by a live resync
	inPast bool       // detached from the hub, fed by the player
}

func (s *session) run() {
	defer s.conn.Close()
	hello, err := s.read(helloTimeout)
	if err == nil && hello.Type != "hello" {
		err = &closeError{code: websocket.ClosePolicyViolation, reason: "first message must be hello"}
	}
	var f *filter
	if err == nil {
		if f, err = compileFilter(hello.Filter); err != nil {
			err = &closeError{code: websocket.CloseUnsupportedData, reason: err.Error()}
		}
	}
	if err != nil {
		s.fail(err)
		return
	}
	if hello.At < 0 || hello.Speed < 0 || hello.Speed > maxSpeed {
		s.fail(&closeError{code: websocket.CloseUnsupportedData, reason: fmt.Sprintf("hello needs at >= 0 (unix ms) and speed in [0, %d]", maxSpeed)})
		return
	}
	s.c = newClient(s.m.cfg.ClientBufferBytes, func() { s.m.metrics.slow.Inc() })
	s.c.filter = f
	s.player = newPlayer(s, f)
	ctx, cancel := context.WithCancel(context.Background())
	playerDone := make(chan struct{})
	go func() { defer close(playerDone); s.player.run(ctx) }()
	// The player may re-attach the client (back to live): stop it before detaching.
	defer func() { cancel(); <-playerDone; s.m.hub.detach(s.c) }()
	resumed := false
	switch {
	case hello.At != 0:
		s.player.ask(travelReq{at: time.UnixMilli(hello.At), speed: hello.Speed})
	case hello.Since != nil:
		resumed = s.m.hub.attach(s.c, hello.Epoch, *hello.Since)
		s.m.metrics.resumes.WithLabelValues(map[bool]string{true: "deltas", false: "snapshot"}[resumed]).Inc()
	default:
		s.m.hub.attach(s.c, "", ^uint64(0)) // no history: always a snapshot
	}

	done := make(chan error, 1)
	go func() { done <- s.readLoop() }()
	werr := s.writeLoop(done)
	if werr != nil {
		s.fail(werr)
	}
}

// read reads one client message, enforcing the size limit with a reason the client sees.
func (s *session) read(timeout time.Duration) (*clientMsg, error) {
	if timeout > 0 {
		s.conn.SetReadDeadline(time.Now().Add(timeout))
	}
	mt, r, err := s.conn.NextReader()
	if err != nil {
		return nil, err
	}
	if mt != websocket.TextMessage {
		return nil, &closeError{code: websocket.CloseUnsupportedData, reason: "only JSON text messages are accepted"}
	}
	limit := s.m.cfg.MaxMessageBytes
	data, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > limit {
		return nil, &closeError{code: websocket.CloseMessageTooBig, reason: fmt.Sprintf("message exceeds %d bytes", limit)}
	}
	var msg clientMsg
	if err := jsonbody.Decode(bytes.NewReader(data), &msg); err != nil {
		return nil, &closeError{code: websocket.CloseInvalidFramePayloadData, reason: "malformed message: " + err.Error()}
	}
	return &msg, nil
}

// readLoop reads client messages. Every message and every pong (the client answers pings
// only while it reads) extends the read deadline by client_timeout: a client that stops
// reading is closed when it runs out.
func (s *session) readLoop() error {
	timeout := s.m.cfg.ClientTimeout
	s.conn.SetPongHandler(func(string) error {
		return s.conn.SetReadDeadline(time.Now().Add(timeout))
	})
	for {
		msg, err := s.read(timeout)
		if isTimeout(err) {
			return stalled(fmt.Sprintf("no pong or message for %s", timeout))
		}
		if err != nil {
			return err
		}
		switch msg.Type {
		case "filter":
			f, err := compileFilter(msg.Filter)
			if err != nil {
				return &closeError{code: websocket.CloseUnsupportedData, reason: err.Error()}
			}
			s.player.ask(travelReq{filter: f, setFilter: true})
		case "at":
			if msg.At <= 0 || msg.Speed < 0 || msg.Speed > maxSpeed {
				return &closeError{code: websocket.CloseUnsupportedData, reason: fmt.Sprintf("at needs at > 0 (unix ms) and speed in [0, %d]", maxSpeed)}
			}
			s.player.ask(travelReq{at: time.UnixMilli(msg.At), speed: msg.Speed})
		case "live":
			s.player.ask(travelReq{live: true})
		default:
			return &closeError{code: websocket.CloseUnsupportedData, reason: fmt.Sprintf("unknown message type %q", msg.Type)}
		}
	}
}

func (s *session) writeLoop(readDone <-chan error) error {
	// Three pings per client_timeout: a reading client answers one well before its read
	// deadline, even when a ping waits behind a long write.
	ping := time.NewTicker(s.m.cfg.ClientTimeout / 3)
	defer ping.Stop()
	for {
		select {
		case err := <-readDone:
			return err
		case <-s.m.stopping:
			return &closeError{code: websocket.CloseGoingAway, reason: "server shutting down"}
		case <-ping.C:
			if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.writeWait())); err != nil {
				return s.writeFailed(err)
			}
		case <-s.c.wake:
			s.modeMu.Lock()
			if !s.c.lagging.Load() || s.inPast {
				s.modeMu.Unlock()
				continue
			}
			s.c.filterMu.Lock()
			f := s.c.filter
			s.c.filterMu.Unlock()
			msgs, err := s.m.hub.snapshot(s.c, f)
			s.modeMu.Unlock()
			if err != nil {
				return err
			}
			s.m.metrics.snapshots.Inc()
			for _, data := range msgs {
				if err := s.write(data); err != nil {
					return err
				}
			}
		case data := <-s.c.queue:
			s.c.queued.Add(-int64(len(data)))
			if err := s.write(data); err != nil {
				return err
			}
		}
	}
}

func (s *session) write(data []byte) error {
	s.conn.SetWriteDeadline(time.Now().Add(s.writeWait()))
	if err := s.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		return s.writeFailed(err)
	}
	s.m.metrics.sentBytes.Add(float64(len(data)))
	return nil
}

// writeWait is how long one write may block: a client whose socket stays full that long
// is not reading.
func (s *session) writeWait() time.Duration { return min(maxWriteWait, s.m.cfg.ClientTimeout) }

func (s *session) writeFailed(err error) error {
	if isTimeout(err) {
		return stalled(fmt.Sprintf("a write blocked for %s", s.writeWait()))
	}
	return err
}

// stalled closes a client that stopped reading: 1008, since keeping up is the protocol's
// policy (no code fits better; 1001 is the server going away).
func stalled(why string) *closeError {
	return &closeError{code: websocket.ClosePolicyViolation, reason: "client stopped reading: " + why, metric: "stalled"}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fail closes the connection, with a reason when the error is the client's fault.
func (s *session) fail(err error) {
	var ce *closeError
	if errors.As(err, &ce) {
		if ce.code != websocket.CloseGoingAway {
			s.m.metrics.rejected.WithLabelValues(cmp.Or(ce.metric, "message")).Inc()
			s.m.log.Warn("topomap websocket: closing client", "remote", s.remote, "code", ce.code, "reason", ce.reason)
		}
		s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(ce.code, ce.reason), time.Now().Add(time.Second))
		// Closing a socket with unread input sends a TCP reset, which can destroy the
		// close frame before the client reads it. Discard (never buffer) what the client
		// is still sending, for a bounded time and size, before closing.
		nc := s.conn.NetConn()
		nc.SetReadDeadline(time.Now().Add(closeGrace))
		io.Copy(io.Discard, io.LimitReader(nc, closeDrainBytes))
	}
}
