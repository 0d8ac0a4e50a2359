package chdb

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	openOnce sync.Once
	testDir  string
)

// open returns the process's engine, under a directory that outlives each test (the
// engine cannot be closed and reopened).
func open(t *testing.T) *DB {
	t.Helper()
	openOnce.Do(func() {
		d, err := os.MkdirTemp("", "meridian-chdb-pkgtest-")
		if err != nil {
			t.Fatal(err)
		}
		testDir = d
	})
	db, err := Open(LibPath(""), testDir)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(runChild(mode))
	}
	code := m.Run()
	if testDir != "" {
		os.RemoveAll(testDir)
	}
	os.Exit(code)
}

func TestQueryAndInsert(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	out, err := db.Query(ctx, "", "SELECT version()", "TabSeparated")
	if err != nil || !strings.HasPrefix(string(out), "26.") {
		t.Fatalf("version: %q %v", out, err)
	}
	if _, err := db.Query(ctx, "", "CREATE DATABASE qi", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Query(ctx, "qi", "CREATE TABLE t (a UInt64, s String) ENGINE = MergeTree ORDER BY a", ""); err != nil {
		t.Fatal(err)
	}
	n, err := db.Insert(ctx, "qi", "INSERT INTO t", "CSV", []byte("1,\"x\"\n2,\"y\"\n"))
	if err != nil || n != 2 {
		t.Fatalf("insert: %d %v", n, err)
	}
	// Every pooled connection sees the database it is asked for.
	var wg sync.WaitGroup
	for range 2 * poolSize {
		wg.Go(func() {
			out, err := db.Query(ctx, "qi", "SELECT sum(a), groupArray(s) FROM (SELECT * FROM t ORDER BY a)", "TabSeparated")
			if err != nil || string(out) != "3\t['x','y']\n" {
				t.Errorf("%q %v", out, err)
			}
		})
	}
	wg.Wait()
}

func TestEngineErrorsKeepTheirText(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	for sql, want := range map[string]string{
		"SELECT * FROM nope_nothing": "UNKNOWN_TABLE",
		"SELEC 1":                    "Syntax error",
		"":                           "empty query",
	} {
		_, err := db.Query(ctx, "", sql, "")
		if err == nil || !strings.Contains(err.Error(), want) || !IsEngineError(err) {
			t.Errorf("%q: want an engine error containing %q, got %v", sql, want, err)
		}
	}
	if _, err := db.Insert(ctx, "", "INSERT INTO nope_nothing", "CSV", []byte("1\n")); err == nil || !strings.Contains(err.Error(), "UNKNOWN_TABLE") {
		t.Errorf("insert into a missing table: %v", err)
	}
}

func TestOpenIsOnePerProcess(t *testing.T) {
	db := open(t)
	again, err := Open(LibPath(""), testDir+"/") // same directory, spelled differently
	if err != nil || again != db {
		t.Fatalf("reopen same path: %v (same DB: %v)", err, again == db)
	}
	if OpenPath() != db.Path() {
		t.Fatalf("OpenPath %q, want %q", OpenPath(), db.Path())
	}
	_, err = Open(LibPath(""), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "already open at "+db.Path()) {
		t.Fatalf("second path: want an error naming the open one, got %v", err)
	}
}

func TestMissingLibraryExplainsHowToGetIt(t *testing.T) {
	_, err := load(filepath.Join(t.TempDir(), "libchdb.so"))
	if err == nil {
		t.Fatal("no error for a missing library")
	}
	for _, want := range []string{"make chdb", "npm pack @chdb/lib-linux-x64-gnu@" + Version, "MERIDIAN_CHDB_LIB", "package/libchdb.so"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestLibPathPrecedence(t *testing.T) {
	t.Setenv(EnvLib, "/env/libchdb.so")
	if got := LibPath("/flag/libchdb.so"); got != "/flag/libchdb.so" {
		t.Errorf("flag: %s", got)
	}
	if got := LibPath(""); got != "/env/libchdb.so" {
		t.Errorf("env: %s", got)
	}
	t.Setenv(EnvLib, "")
	if got := LibPath(""); !strings.HasSuffix(got, ".cache/meridian/chdb-"+Version+"/package/libchdb.so") {
		t.Errorf("default: %s", got)
	}
}

// The engine runs with explicit ceilings, not a dedicated server's defaults (5 GiB mark
// and primary index caches, 90 % of RAM).
func TestEngineMemoryIsBounded(t *testing.T) {
	db := open(t)
	out, err := db.Query(context.Background(), "", "SELECT name, value FROM system.server_settings WHERE name IN "+
		"('max_server_memory_usage', 'mark_cache_size', 'index_mark_cache_size', 'primary_index_cache_size', 'uncompressed_cache_size') ORDER BY name", "TSV")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("index_mark_cache_size\t%d\nmark_cache_size\t%d\nmax_server_memory_usage\t%d\nprimary_index_cache_size\t%d\nuncompressed_cache_size\t0\n",
		16<<20, 64<<20, DefaultLimits.MaxMemory, 64<<20)
	if string(out) != want {
		t.Fatalf("server settings:\n%s\nwant:\n%s", out, want)
	}
}
