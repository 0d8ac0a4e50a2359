// Package server is Meridian's one HTTP listener: /metrics, /healthz, /readyz and the
// APIs the other components mount. APIs take a bearer token; probes and /metrics do not,
// so a Prometheus or a kubelet can reach them without a secret.
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
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridianhq/meridian/internal/httpmux"
)

// TokenEnv is the environment variable holding the API token when no token file is set.
const TokenEnv = "MERIDIAN_API_TOKEN"

// Config is the HTTP listener's configuration.
type Config struct {
	ListenAddress string `yaml:"listen_address"`
	TokenFile     string `yaml:"token_file"`
	// AllowNoToken serves the APIs without a token. Off by default.
	AllowNoToken bool `yaml:"allow_no_token"`
}

// RegisterFlags registers the server flags.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.ListenAddress, "server.listen-address", "127.0.0.1:9470", "HTTP listen address for /metrics, /healthz, /readyz, the APIs and the map.")
	f.StringVar(&c.TokenFile, "server.token-file", "", "File holding the bearer token the APIs and websockets require (default: env "+TokenEnv+").")
	f.BoolVar(&c.AllowNoToken, "server.allow-no-token", false, "Serve the APIs without a token (only for a listener nobody else can reach).")
}

// Token reads the API token from the token file or the environment.
func (c *Config) Token() (string, error) {
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", fmt.Errorf("server.token_file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return os.Getenv(TokenEnv), nil
}

// Server is the HTTP listener as a dskit service.
type Server struct {
	services.Service
	cfg   Config
	token string
	log   *slog.Logger
	mux   *httpmux.Mux
	srv   *http.Server
	ln    net.Listener

	mu     sync.Mutex
	checks map[string]func() error
	routes []Route
}

// Route is one pattern mounted on the server: whether it is behind the bearer token, and
// the patterns its handler serves when it lists them (httpmux.Lister).
type Route struct {
	Pattern string
	Guarded bool
	Sub     []string
}

// New creates the server; it listens once started. gatherer serves /metrics.
func New(cfg Config, gatherer prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	token, err := cfg.Token()
	if err != nil {
		return nil, err
	}
	if token == "" && !cfg.AllowNoToken {
		return nil, fmt.Errorf("server: no API token: set %s, -server.token-file, or -server.allow-no-token", TokenEnv)
	}
	s := &Server{cfg: cfg, token: token, log: log, mux: httpmux.New(), checks: map[string]func() error{}}
	s.HandleOpen("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	s.HandleOpen("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	s.HandleOpen("GET /readyz", http.HandlerFunc(s.ready))
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	s.Service = services.NewBasicService(s.start, s.run, s.stop)
	return s, nil
}

// Handle mounts an API handler behind the bearer token.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, s.Auth(h))
	s.addRoute(pattern, true, h)
}

// HandleOpen mounts a handler that does its own authentication (a websocket that takes
// its token as a query parameter, the ClickHouse-compatible endpoint's passwords, the map's
// static assets).
func (s *Server) HandleOpen(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
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
	if s.token == "" {
		return h
	}
	want := []byte("Bearer " + s.token)
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
	s.ln = ln
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
