// Package server is Meridian's one HTTP listener: /metrics, /healthz, /readyz and the
// APIs the other components mount. APIs take a bearer token; probes and /metrics do not,
// so a Prometheus or a kubelet can reach them without a secret. Every connection is
// bounded in time (header, body, reply, idle) and in number, and every reply carries
// security headers.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridianhq/meridian/internal/httpmux"
	"github.com/meridianhq/meridian/internal/secret"
)

// TokenEnv is the environment variable holding the API token when no token file is set.
const TokenEnv = "MERIDIAN_API_TOKEN"

// Config is the HTTP listener's configuration.
type Config struct {
	ListenAddress string `yaml:"listen_address"`
	TokenFile     string `yaml:"token_file" secret:"MERIDIAN_API_TOKEN"`
	// AllowNoToken serves the APIs without a token. Off by default.
	AllowNoToken bool `yaml:"allow_no_token"`

	// The timeouts bound what a slow or idle client can hold: a connection that trickles
	// its headers or body, reads its reply slowly, or idles between requests is closed
	// when its bound passes. Routes that stream (the map's websocket) or run longer
	// (/clickhouse/ queries) override them per route (RouteOption).
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	// MaxConnections bounds the open connections (websockets included); one more is
	// answered 503 and closed at once, so descriptors and memory stay bounded.
	MaxConnections int `yaml:"max_connections"`
}

// RegisterFlags registers the server flags.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.ListenAddress, "server.listen-address", "127.0.0.1:9470", "HTTP listen address for /metrics, /healthz, /readyz, the APIs and the map.")
	f.StringVar(&c.TokenFile, "server.token-file", "", "File holding the bearer token the APIs and websockets require (default: env "+TokenEnv+").")
	f.BoolVar(&c.AllowNoToken, "server.allow-no-token", false, "Serve the APIs without a token (only for a listener nobody else can reach).")
	f.DurationVar(&c.ReadHeaderTimeout, "server.read-header-timeout", 10*time.Second, "Longest a client may take to send a request's headers.")
	f.DurationVar(&c.ReadTimeout, "server.read-timeout", 30*time.Second, "Longest a client may take to send a whole request, body included.")
	f.DurationVar(&c.WriteTimeout, "server.write-timeout", 3*time.Minute, "Longest a request may take from its headers to the end of its reply (above PromQL's 2-minute query timeout); the websocket and /clickhouse/ set their own.")
	f.DurationVar(&c.IdleTimeout, "server.idle-timeout", time.Minute, "Longest a keep-alive connection may idle between requests.")
	f.IntVar(&c.MaxConnections, "server.max-connections", 4096, "Most connections open at once; one more is answered 503 and closed.")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"read_header_timeout", c.ReadHeaderTimeout}, {"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout}, {"idle_timeout", c.IdleTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("server.%s: %v is not positive (every connection needs a bound)", d.name, d.v)
		}
	}
	if c.ReadHeaderTimeout > c.ReadTimeout {
		return fmt.Errorf("server.read_header_timeout: %v exceeds read_timeout %v", c.ReadHeaderTimeout, c.ReadTimeout)
	}
	if c.MaxConnections <= 0 {
		return fmt.Errorf("server.max_connections: %d is not positive", c.MaxConnections)
	}
	return nil
}

// Token is where the API token is: token_file, else $MERIDIAN_API_TOKEN.
func (c *Config) Token() secret.Source {
	return secret.Source{File: c.TokenFile, Env: TokenEnv, Field: "server.token_file"}
}

// Server is the HTTP listener as a dskit service.
type Server struct {
	services.Service
	cfg   Config
	token secret.Value
	log   *slog.Logger
	mux   *httpmux.Mux
	srv   *http.Server
	ln    net.Listener
	conns *connMetrics

	mu     sync.Mutex
	checks map[string]func() error
	routes []Route
}

// Token is the API token the guarded routes require (empty with allow_no_token).
func (s *Server) Token() secret.Value { return s.token }

// Route is one pattern mounted on the server: whether it is behind the bearer token, and
// the patterns its handler serves when it lists them (httpmux.Lister).
type Route struct {
	Pattern string
	Guarded bool
	Sub     []string
}

// Deps are what the server uses besides its configuration.
type Deps struct {
	Registry *prometheus.Registry // served on /metrics; takes the server's own metrics too
	Logger   *slog.Logger
}

// New creates the server; it listens once started.
func New(cfg Config, d Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg, log := d.Registry, d.Logger
	token, err := secret.Read(cfg.Token())
	if err != nil {
		return nil, err
	}
	if token.Empty() && !cfg.AllowNoToken {
		return nil, fmt.Errorf("server: no API token: set %s, -server.token-file, or -server.allow-no-token", TokenEnv)
	}
	conns, err := newConnMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, token: token, log: log, mux: httpmux.New(), conns: conns, checks: map[string]func() error{}}
	s.HandleOpen("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	s.HandleOpen("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	s.HandleOpen("GET /readyz", http.HandlerFunc(s.ready))
	s.srv = &http.Server{
		Handler:           securityHeaders(s.mux),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s.Service = services.NewBasicService(s.start, s.run, s.stop)
	return s, nil
}

// Handle mounts an API handler behind the bearer token.
func (s *Server) Handle(pattern string, h http.Handler, opts ...RouteOption) {
	s.mux.Handle(pattern, withRoute(s.Auth(h), opts))
	s.addRoute(pattern, true, h)
}

// HandleOpen mounts a handler that does its own authentication (a websocket that takes
// its token as a query parameter, the ClickHouse-compatible endpoint's passwords, the map's
// static assets).
func (s *Server) HandleOpen(pattern string, h http.Handler, opts ...RouteOption) {
	s.mux.Handle(pattern, withRoute(h, opts))
	s.addRoute(pattern, false, h)
}

func (s *Server) addRoute(pattern string, guarded bool, h http.Handler) {
	r := Route{Pattern: pattern, Guarded: guarded}
	if l, ok := h.(httpmux.Lister); ok {
		r.Sub = l.Patterns()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes = append(s.routes, r)
}

// Routes lists every pattern mounted so far, so a test can check each one's guard.
func (s *Server) Routes() []Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.routes)
}

// AddReadyCheck makes /readyz fail while check returns an error.
func (s *Server) AddReadyCheck(name string, check func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = check
}

// Addr is the bound address once the server has started.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Auth wraps h so it requires "Authorization: Bearer <token>".
func (s *Server) Auth(h http.Handler) http.Handler {
	if s.token.Empty() {
		return h
	}
	want := []byte("Bearer " + s.token.Reveal())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meridian"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if s.State() != services.Running {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var failed []string
	for name, check := range s.checks {
		if err := check(); err != nil {
			failed = append(failed, name+": "+err.Error())
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		http.Error(w, strings.Join(failed, "\n"), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

func (s *Server) start(context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.ListenAddress)
	if err != nil {
		return fmt.Errorf("server: listen %s: %w", s.cfg.ListenAddress, err)
	}
	s.ln = newLimitListener(ln, s.cfg.MaxConnections, s.conns)
	s.log.Info("HTTP server listening", "addr", ln.Addr().String())
	return nil
}

func (s *Server) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("server: %w", err)
	}
}

func (s *Server) stop(error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
