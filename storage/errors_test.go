package storage_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

func probeBlock(t *testing.T, token string, vantages ...string) pipeline.Block {
	t.Helper()
	var recs []pipeline.Record
	for _, v := range vantages {
		recs = append(recs, &pipeline.Probe{M: pipeline.Meta{Time: time.Now()}, Vantage: v, Method: "dns", POP: "lon"})
	}
	return encode(t, pipeline.KindProbe, recs, token)
}

// TestInsertErrorsAreClassified: a block the real engine refuses for good comes back
// permanent, from the embedded engine and over the native protocol alike; an engine
// error about the store's state and every transport failure stay retryable.
func TestInsertErrorsAreClassified(t *testing.T) {
	s := storagetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Exec(ctx, "ALTER TABLE probes ADD CONSTRAINT no_poison CHECK vantage != 'poison'"); err != nil {
		t.Fatal(err)
	}
	wrongKind := probeBlock(t, "wrong-kind", "tyo")
	wrongKind.Kind = pipeline.KindTunnelStat

	sh := startShim(t, s)
	cfg := serverConfig(t, "clickhouse://meridian@"+sh.addr()+"/", "")
	cfg.Database = s.Database()
	viaServer, err := storage.New(cfg, storage.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer viaServer.Close()

	for _, tc := range []struct {
		name      string
		b         pipeline.Block
		want      string // in the error text
		permanent bool
	}{
		{"constraint", probeBlock(t, "poison", "tyo", "poison"), "VIOLATED_CONSTRAINT", true},
		{"not native", pipeline.Block{Kind: pipeline.KindFlow, Rows: 1, Token: "junk", Native: []byte("not a native block")}, "", true},
		{"wrong kind", wrongKind, "tunnel_stats", true},
		{"unknown kind", pipeline.Block{Kind: pipeline.Kind(200), Rows: 1, Native: []byte{0}}, "unknown kind", true},
	} {
		for _, st := range []struct {
			driver string
			s      *storage.Store
		}{{"embedded", s}, {"server", viaServer}} {
			err := st.s.Insert(ctx, tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) || pipeline.IsPermanent(err) != tc.permanent {
				t.Errorf("%s via %s: %v (permanent %v), want an error with %q, permanent %v",
					tc.name, st.driver, err, pipeline.IsPermanent(err), tc.want, tc.permanent)
			}
		}
	}
	if err := s.Insert(ctx, probeBlock(t, "fine", "tyo")); err != nil {
		t.Fatalf("a good block after the refused ones: %v", err)
	}

	// A missing table is the store's state (migrations recreate it), not the block's fault.
	if err := s.Exec(ctx, "DROP TABLE steering_decisions"); err != nil {
		t.Fatal(err)
	}
	b := encode(t, pipeline.KindSteeringDecision, []pipeline.Record{&pipeline.SteeringDecision{M: pipeline.Meta{Time: time.Now()}, POP: "lon"}}, "no-table")
	for _, st := range []*storage.Store{s, viaServer} {
		if err := st.Insert(ctx, b); err == nil || !strings.Contains(err.Error(), "UNKNOWN_TABLE") || pipeline.IsPermanent(err) {
			t.Errorf("insert into a dropped table: %v (permanent %v), want UNKNOWN_TABLE, retryable", err, pipeline.IsPermanent(err))
		}
	}
}

// TestTransportFailuresAreRetryable: a refused dial and a connection the server closes
// mid-handshake are not the block's fault.
func TestTransportFailuresAreRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	b := pipeline.Block{Kind: pipeline.KindProbe, Rows: 0, Token: "t"}
	native, err := storage.NewEncoder().Encode(pipeline.KindProbe, []pipeline.Record{&pipeline.Probe{M: pipeline.Meta{Time: time.Now()}}})
	if err != nil {
		t.Fatal(err)
	}
	b.Rows, b.Native = 1, native
	for name, addr := range map[string]string{"closed port": closedPort(t), "closed connection": ln.Addr().String()} {
		s, err := storage.New(serverConfig(t, "clickhouse://meridian@"+addr+"/", ""), storage.Deps{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = s.Insert(ctx, b)
		cancel()
		s.Close()
		if err == nil || pipeline.IsPermanent(err) {
			t.Errorf("%s: %v (permanent %v), want a retryable error", name, err, pipeline.IsPermanent(err))
		}
	}
}
