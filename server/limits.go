package server

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RouteOption changes how the server treats one route's connections.
type RouteOption func(*route)

type route struct {
	setWrite bool
	write    time.Duration // 0: no deadline
	setRead  bool
}

// WriteTimeout gives a route its own reply deadline, counted from when its handler
// starts, in place of -server.write-timeout: longer for a route whose work may take
// longer (a query with its own execution limit), shorter for a cheap one.
func WriteTimeout(d time.Duration) RouteOption {
	return func(r *route) { r.setWrite, r.write = true, d }
}

// Streaming lifts the server's read and write deadlines for a route whose connection
// outlives one request and reply (a websocket): its handler must set its own (ping/pong
// and write deadlines), since the server's would cut it off.
func Streaming() RouteOption {
	return func(r *route) { r.setWrite, r.write, r.setRead = true, 0, true }
}

// withRoute applies opts to h's requests; deadlines are moved with the connection's
// ResponseController, so the server's own bounds still hold for every other route.
func withRoute(h http.Handler, opts []RouteOption) http.Handler {
	if len(opts) == 0 {
		return h
	}
	var rt route
	for _, o := range opts {
		o(&rt)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if rt.setWrite {
			var d time.Time
			if rt.write > 0 {
				d = time.Now().Add(rt.write)
			}
			_ = rc.SetWriteDeadline(d) // ErrNotSupported only under a test recorder
		}
		if rt.setRead {
			_ = rc.SetReadDeadline(time.Time{})
		}
		h.ServeHTTP(w, r)
	})
}

// securityHeaders sets on every reply the headers that keep a browser from
// misinterpreting it: no MIME sniffing, no framing (clickjacking), no referrer leaking a
// token in a URL, and a policy under which an API reply rendered as a page runs nothing.
// A handler that serves a page sets its own policy over this one (the map's).
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		h.ServeHTTP(w, r)
	})
}

type connMetrics struct {
	open    prometheus.Gauge
	refused prometheus.Counter
}

func newConnMetrics(reg prometheus.Registerer) (*connMetrics, error) {
	m := &connMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_server_connections",
			Help: "HTTP connections open (websockets included).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_server_connections_refused_total",
			Help: "HTTP connections refused because -server.max-connections were open.",
		}),
	}
	for _, c := range []prometheus.Collector{m.open, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// limitListener bounds the connections open at once. Unlike netutil.LimitListener it
// does not stop accepting at the bound (that leaves new clients hanging in the kernel's
// backlog with no answer): one connection too many gets a 503 and is closed at once.
type limitListener struct {
	net.Listener
	slots chan struct{}
	m     *connMetrics
}

func newLimitListener(ln net.Listener, n int, m *connMetrics) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), m: m}
}

// tooMany is the whole reply to a connection over the bound.
const tooMany = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 21\r\n\r\ntoo many connections\n"

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			l.m.open.Inc()
			return &limitedConn{Conn: c, l: l}, nil
		default:
			l.m.refused.Inc()
			// A fresh socket's send buffer is empty: the write does not block the loop.
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			c.Write([]byte(tooMany))
			c.Close()
		}
	}
}

// limitedConn frees its slot when closed, whoever closes it (the server, or a websocket
// handler that hijacked it).
type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		<-c.l.slots
		c.l.m.open.Dec()
	})
	return err
}
