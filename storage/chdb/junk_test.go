package chdb

import (
	"context"
	"strings"
	"testing"
)

// A Native insert that the engine rejects (into a table feeding a materialized view)
// reports the engine's error and leaves the engine usable: later inserts, queries and a
// DROP DATABASE work. (A DROP ... SYNC would wait forever here: chDB 26.7 keeps a
// reference from the failed insert, so callers drop without SYNC.)
func TestRejectedInsertLeavesEngineUsable(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	for _, q := range []string{"CREATE DATABASE junk", "CREATE TABLE junk.j (a UInt64) ENGINE = MergeTree ORDER BY a",
		"CREATE TABLE junk.agg (a UInt64, c AggregateFunction(count)) ENGINE = AggregatingMergeTree ORDER BY a",
		"CREATE MATERIALIZED VIEW junk.mv TO junk.agg AS SELECT a, countState() AS c FROM junk.j GROUP BY a"} {
		if _, err := db.Query(ctx, "", q, ""); err != nil {
			t.Fatal(err)
		}
	}
	_, err := db.Insert(ctx, "", "INSERT INTO junk.j", "Native", []byte("not a native block"))
	if err == nil || !strings.Contains(err.Error(), "CANNOT_READ_ALL_DATA") {
		t.Fatalf("junk Native: want CANNOT_READ_ALL_DATA, got %v", err)
	}
	if _, err := db.Insert(ctx, "junk", "INSERT INTO j", "CSV", []byte("1\n2\n")); err != nil {
		t.Fatalf("insert after a rejected one: %v", err)
	}
	if out, err := db.Query(ctx, "junk", "SELECT count(), (SELECT countMerge(c) FROM agg) FROM j", ""); err != nil || string(out) != "2\t2\n" {
		t.Fatalf("count: %q %v", out, err)
	}
	if _, err := db.Query(ctx, "", "DROP DATABASE junk", ""); err != nil {
		t.Fatal(err)
	}
}
