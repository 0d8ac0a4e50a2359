package server

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
)

// defaults is the configuration the flags give.
func defaults() Config {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("test", flag.PanicOnError))
	return cfg
}

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	return serve(t, cfg, func(s *Server) {
		s.Handle("GET /api/x", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "x") }))
	})
}

// serve starts a server on a free loopback port with the routes mount adds.
func serve(t *testing.T, cfg Config, mount func(*Server)) *Server {
	t.Helper()
	cfg.ListenAddress = "127.0.0.1:0"
	s, err := New(cfg, Deps{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	mount(s)
	if err := services.StartAndAwaitRunning(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), s) })
	return s
}

func status(t *testing.T, url, auth string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAPIsTakeAToken(t *testing.T) {
	t.Setenv(TokenEnv, "tok")
	s := start(t, defaults())
	base := "http://" + s.Addr()
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/api/x", "", 401},
		{"/api/x", "Bearer nope", 401},
		{"/api/x", "Bearer tok", 200},
		{"/healthz", "", 200},
		{"/metrics", "", 200},
		{"/readyz", "", 200},
	} {
		if got := status(t, base+tc.path, tc.auth); got != tc.want {
			t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.auth, got, tc.want)
		}
	}
	s.AddReadyCheck("storage", func() error { return io.ErrUnexpectedEOF })
	if got := status(t, base+"/readyz", ""); got != 503 {
		t.Errorf("readyz with a failing check: %d", got)
	}
}

func TestNoTokenIsAnError(t *testing.T) {
	t.Setenv(TokenEnv, "")
	if _, err := New(defaults(), Deps{Registry: prometheus.NewRegistry(), Logger: slog.Default()}); err == nil {
		t.Fatal("want an error without a token")
	}
}
