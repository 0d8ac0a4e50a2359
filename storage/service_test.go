package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

func TestServiceMigratesOnStart(t *testing.T) {
	cfg := storagetest.Config(t)
	s, err := storage.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Cleanup(func() { s.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database) })
	svc := s.Service()
	if err := services.StartAndAwaitRunning(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, s, "SELECT count() FROM schema_migrations"); got != migrationCount(t) {
		t.Fatalf("migrations after start: %s", got)
	}
	if err := services.StopAndAwaitTerminated(ctx, svc); err != nil {
		t.Fatal(err)
	}
}

// Against an unreachable server the service keeps retrying and stops cleanly when asked.
func TestServiceRetriesUnreachableServer(t *testing.T) {
	s, err := storage.New(serverConfig(t, "clickhouse://"+closedPort(t)+"/", ""), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	svc := s.Service()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.StartAsync(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancelShort()
	if err := svc.AwaitRunning(short); err == nil {
		t.Fatal("service ran without a server")
	}
	if st := svc.State(); st != services.Starting {
		t.Fatalf("state %s, want Starting (retrying)", st)
	}
	svc.StopAsync()
	_ = svc.AwaitTerminated(ctx) // stopped while starting: the service fails with the context's error
	if st := svc.State(); st != services.Terminated && st != services.Failed {
		t.Fatalf("state after stop: %s", st)
	}
}
