package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/proto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

// The server driver end to end over the native protocol, against the shim: every kind's
// block is decoded into ch-go columns, sent, and stored once despite a retry; row formats
// come back through formatRow; engine errors keep their text.
func TestServerDriverOverNativeProtocol(t *testing.T) {
	backend := storagetest.New(t)
	sh := startShim(t, backend)
	cfg := serverConfig(t, "clickhouse://meridian@"+sh.addr()+"/", "")
	cfg.Database = backend.Database()
	s, err := storage.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Migrating again through the server driver: the applied versions are read back
	// (TabSeparated via formatRow) and nothing is re-applied.
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, backend, "SELECT count() FROM schema_migrations"); got != migrationCount(t) {
		t.Fatalf("schema_migrations after a migrate over the server driver: %s rows", got)
	}

	for _, rt := range roundTrips {
		native, err := storage.NewEncoder().Encode(rt.kind, rt.recs)
		if err != nil {
			t.Fatal(err)
		}
		b := pipeline.Block{Kind: rt.kind, Rows: len(rt.recs), Token: "srv-" + rt.kind.String(), Native: native}
		for range 2 { // a retry of the same token
			if err := s.Insert(ctx, b); err != nil {
				t.Fatalf("%s: %v", rt.kind, err)
			}
		}
		out, err := s.Query(ctx, "SELECT count() FROM "+backend.Table(rt.kind), "TabSeparated")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != strconv.Itoa(len(rt.recs)) {
			t.Errorf("%s: %s rows after an insert and its retry, want %d", rt.kind, got, len(rt.recs))
		}
	}
	out, err := s.Query(ctx, "SELECT pop, rtt FROM "+backend.Table(pipeline.KindProbe)+" ORDER BY pop", "JSONEachRow")
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\"pop\":\"lon\",\"rtt\":1500000}\n{\"pop\":\"par\",\"rtt\":0}\n"; string(out) != want {
		t.Errorf("JSONEachRow over the server driver:\n got %q\nwant %q", out, want)
	}
	// Native: the blocks the server sent, re-encoded, hold what the engine itself writes
	// (compared after a ch-go round trip: the engine keeps a default entry in
	// LowCardinality dictionaries that ch-go does not).
	sql := "SELECT pop, rtt, success FROM " + backend.Table(pipeline.KindProbe) + " ORDER BY pop"
	viaServer, err := s.Query(ctx, sql, "Native")
	if err != nil {
		t.Fatal(err)
	}
	direct, err := backend.Query(ctx, sql, "Native")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(viaServer, reencode(t, direct)) || len(direct) == 0 {
		t.Errorf("Native over the server driver differs:\n%q\n%q", viaServer, direct)
	}
	if _, err := s.Query(ctx, "SELECT * FROM no_such_table", "TabSeparated"); err == nil || !strings.Contains(err.Error(), "UNKNOWN_TABLE") {
		t.Errorf("engine error over the protocol: %v", err)
	}
	if _, err := s.Query(ctx, "SELECT 1", "Pretty"); err == nil || !strings.Contains(err.Error(), "Pretty") {
		t.Errorf("unsupported format: %v", err)
	}
}

// reencode decodes Native blocks with ch-go's inferred columns and encodes them again.
func reencode(t *testing.T, native []byte) []byte {
	t.Helper()
	var out proto.Buffer
	r := proto.NewReader(bytes.NewReader(native))
	for {
		var res proto.Results
		var blk proto.Block
		if err := blk.DecodeRawBlock(r, 0, res.Auto()); err != nil {
			if errors.Is(err, io.EOF) {
				return out.Buf
			}
			t.Fatal(err)
		}
		in := make(proto.Input, len(res))
		for i, c := range res {
			in[i] = proto.InputColumn{Name: c.Name, Data: c.Data.(proto.ColInput)}
		}
		if err := blk.EncodeRawBlock(&out, 0, in); err != nil {
			t.Fatal(err)
		}
	}
}
