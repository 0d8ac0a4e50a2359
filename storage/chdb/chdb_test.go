package chdb

import (
	"context"
	"strings"
	"testing"
)

func TestQueryAndInsert(t *testing.T) {
	db, err := Open(LibPath(""), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out, err := db.Query(ctx, "", "SELECT version()", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("version %s", out)
	if _, err := db.Query(ctx, "", "SELECT * FROM nope_nothing", "TabSeparated"); err == nil || !strings.Contains(err.Error(), "UNKNOWN_TABLE") {
		t.Fatalf("want UNKNOWN_TABLE, got %v", err)
	}
	if _, err := db.Query(ctx, "", "CREATE TABLE t (a UInt64, s String) ENGINE = MergeTree ORDER BY a", ""); err != nil {
		t.Fatal(err)
	}
	n, err := db.Insert(ctx, "", "INSERT INTO t", "CSV", []byte("1,\"x\"\n2,\"y\"\n"))
	if err != nil || n != 2 {
		t.Fatalf("insert: %d %v", n, err)
	}
	out, err = db.Query(ctx, "", "SELECT sum(a), groupArray(s) FROM t", "TabSeparated")
	if err != nil || string(out) != "3\t['x','y']\n" {
		t.Fatalf("%q %v", out, err)
	}
}
