// Package storagetest gives tests a migrated Meridian database on the real embedded
// ClickHouse engine. The engine is one per process, so every test shares it and gets its
// own database, dropped at cleanup.
package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/chdb"
)

// New returns a Store on a fresh, migrated database. It fails the test (with the
// instructions to fetch libchdb.so) when the engine cannot start.
func New(t testing.TB) *storage.Store {
	t.Helper()
	cfg := Config(t)
	s, err := storage.New(cfg, storage.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("storagetest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("storagetest: migrate %s: %v", cfg.Database, err)
	}
	// Dropped without SYNC: chDB 26.7 can hold a table after a rejected insert, and a
	// SYNC drop would wait for it forever.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Exec(ctx, "DROP DATABASE IF EXISTS "+cfg.Database); err != nil {
			t.Errorf("storagetest: drop %s: %v", cfg.Database, err)
		}
		s.Close()
	})
	return s
}

// Config is an embedded-engine configuration with a database name of its own, for tests
// that construct the store themselves. Nothing is created yet.
func Config(t testing.TB) storage.Config {
	t.Helper()
	var cfg storage.Config
	cfg.TTL = storage.DefaultTTLs()
	cfg.Path = enginePath()
	cfg.Database = dbName(t.Name())
	return cfg
}

var nonIdent = regexp.MustCompile(`[^A-Za-z0-9_]+`)

func dbName(test string) string {
	name := strings.ToLower(nonIdent.ReplaceAllString(test, "_"))
	if len(name) > 40 {
		name = name[:40]
	}
	var b [4]byte
	rand.Read(b[:])
	return "t_" + name + "_" + hex.EncodeToString(b[:])
}

var (
	pathOnce sync.Once
	path     string
)

// enginePath is the engine already open in this process, else a directory of this
// process's own under the temp dir. Directories left by earlier test processes that are
// gone are removed, since the engine outlives every test and cannot clean up after itself.
func enginePath() string {
	pathOnce.Do(func() {
		if p := chdb.OpenPath(); p != "" {
			path = p
			return
		}
		base := os.TempDir()
		old, _ := filepath.Glob(filepath.Join(base, "meridian-chdb-test-*"))
		for _, dir := range old {
			pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "meridian-chdb-test-"))
			if err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
				os.RemoveAll(dir)
			}
		}
		path = filepath.Join(base, fmt.Sprintf("meridian-chdb-test-%d", os.Getpid()))
	})
	return path
}
