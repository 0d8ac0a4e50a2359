package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

func queryString(t *testing.T, s *storage.Store, sql string) string {
	t.Helper()
	out, err := s.Query(context.Background(), sql, "TabSeparated")
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return strings.TrimSpace(string(out))
}

func encode(t *testing.T, kind pipeline.Kind, recs []pipeline.Record, token string) pipeline.Block {
	t.Helper()
	native, err := storage.NewEncoder().Encode(kind, recs)
	if err != nil {
		t.Fatal(err)
	}
	return pipeline.Block{Kind: kind, Rows: len(recs), Token: token, Native: native}
}

func TestSameTokenStoredOnce(t *testing.T) {
	s := storagetest.New(t)
	ctx := context.Background()
	var recs []pipeline.Record
	for i := range 100 {
		recs = append(recs, &pipeline.Flow{M: meta("nyc-1"), Verdict: "FORWARDED", SourcePort: uint16(i),
			Source: pipeline.Endpoint{Namespace: "shop", Workload: "web"}, Destination: pipeline.Endpoint{Namespace: "shop", Workload: "api"}})
	}
	b := encode(t, pipeline.KindFlow, recs, "batch-42")
	for range 3 { // the first try and two retries
		if err := s.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if got := queryString(t, s, "SELECT count() FROM flows"); got != "100" {
		t.Fatalf("flows rows after 3 inserts of one token: %s, want 100", got)
	}
	if got := queryString(t, s, "SELECT countMerge(flows) FROM flows_1m"); got != "100" {
		t.Fatalf("flows_1m after 3 inserts of one token: %s, want 100", got)
	}
	// The same rows under another token are a new block: deduplication is by token.
	b.Token = "batch-43"
	if err := s.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, s, "SELECT count() FROM flows"); got != "200" {
		t.Fatalf("flows rows after a second token: %s, want 200", got)
	}
	if got := queryString(t, s, "SELECT countMerge(flows) FROM flows_1m"); got != "200" {
		t.Fatalf("flows_1m after a second token: %s, want 200", got)
	}
}

func TestRollupsHoldAggregates(t *testing.T) {
	s := storagetest.New(t)
	ctx := context.Background()
	m0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	type edge struct{ src, dst string }
	type agg struct{ flows, drops, requests, errors int }
	want := map[string]agg{} // "minute src dst" -> counts
	var batches [2][]pipeline.Record
	for i := range 600 {
		minute := m0.Add(time.Duration(i%3) * time.Minute)
		e := []edge{{"web", "api"}, {"api", "db"}}[i%2]
		f := &pipeline.Flow{
			M:      pipeline.Meta{Time: minute.Add(time.Duration(i) * 50 * time.Millisecond), Cluster: "destroyer", Node: "nyc-1"},
			Source: pipeline.Endpoint{Namespace: "shop", Workload: e.src}, Destination: pipeline.Endpoint{Namespace: "shop", Workload: e.dst},
			L4Protocol: "TCP", DestinationPort: 8080, Verdict: "FORWARDED", L7Type: "HTTP",
		}
		k := fmt.Sprintf("%s %s %s", minute.Format("2006-01-02 15:04:05"), e.src, e.dst)
		a := want[k]
		a.flows++
		switch i % 5 {
		case 0:
			f.Verdict, f.DropReason, f.L7Type = "DROPPED", "POLICY_DENIED", ""
			a.drops++
		case 1, 2:
			a.requests++ // a request
		default:
			f.IsReply, f.HTTPCode, f.L7Latency = true, 200, time.Duration(1+i%37)*time.Millisecond
			if i%7 == 0 {
				f.HTTPCode = 503
				a.errors++
			}
		}
		want[k] = a
		batches[i%2] = append(batches[i%2], f) // two blocks: two parts whose states must merge
	}
	for i, b := range batches {
		if err := s.Insert(ctx, encode(t, pipeline.KindFlow, b, fmt.Sprintf("rollup-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	out := queryString(t, s, `SELECT minute, src_workload, dst_workload, countMerge(flows), countIfMerge(drops), countIfMerge(requests), countIfMerge(errors)
		FROM flows_1m GROUP BY minute, src_workload, dst_workload ORDER BY minute, src_workload`)
	lines := strings.Split(out, "\n")
	if len(lines) != len(want) {
		t.Fatalf("flows_1m has %d groups, want %d:\n%s", len(lines), len(want), out)
	}
	for _, l := range lines {
		f := strings.Split(l, "\t")
		a := want[strings.Join(f[:3], " ")]
		if got, exp := strings.Join(f[3:], " "), fmt.Sprintf("%d %d %d %d", a.flows, a.drops, a.requests, a.errors); got != exp {
			t.Errorf("%s: flows drops requests errors = %s, want %s", strings.Join(f[:3], " "), got, exp)
		}
	}
	// Latency quantiles merged from the rollup's states equal those over the raw flows.
	rollup := queryString(t, s, `SELECT minute, src_workload, quantilesIfMerge(0.5, 0.9, 0.99)(latency) FROM flows_1m
		GROUP BY minute, src_workload ORDER BY minute, src_workload`)
	raw := queryString(t, s, `SELECT toStartOfMinute(time) AS minute, src_workload, quantilesIf(0.5, 0.9, 0.99)(l7_latency, l7_latency > 0) FROM flows
		GROUP BY minute, src_workload ORDER BY minute, src_workload`)
	if rollup != raw || !strings.Contains(rollup, "[") {
		t.Fatalf("latency quantiles:\nrollup %s\n   raw %s", rollup, raw)
	}

	// Probes: per-minute RTT per vantage x POP, only successful probes in the RTT.
	var probes []pipeline.Record
	for i := range 50 {
		p := &pipeline.Probe{M: pipeline.Meta{Time: m0.Add(time.Duration(i) * time.Second)}, Vantage: "london", Method: "dns",
			POP: []string{"lon", "par"}[i%2], Service: "api", Success: i%10 != 0, RTT: time.Duration(i+1) * time.Millisecond}
		probes = append(probes, p)
	}
	if err := s.Insert(ctx, encode(t, pipeline.KindProbe, probes, "probes-1")); err != nil {
		t.Fatal(err)
	}
	// lon: i even 0..48 (25 probes), failures i%10==0 -> 0,10,20,30,40 (5); successful RTTs
	// (i+1) ms for the other 20 even i: sum = sum(1..49 odd) - (1+11+21+31+41) = 625-105 = 520 ms.
	got := queryString(t, s, `SELECT pop, countMerge(probes), countIfMerge(failures), avgIfMerge(rtt_avg) / 1e6 FROM probes_1m GROUP BY pop ORDER BY pop`)
	if want := "lon\t25\t5\t26\npar\t25\t0\t26"; got != want {
		t.Fatalf("probes_1m:\n got %q\nwant %q", got, want)
	}
}

func TestBadSQLReturnsEngineError(t *testing.T) {
	s := storagetest.New(t)
	ctx := context.Background()
	for _, c := range []struct{ sql, want string }{
		{"SELECT * FROM no_such_table", "UNKNOWN_TABLE"},
		{"SELEC 1", "Syntax error"},
		{"SELECT no_such_column FROM flows", "UNKNOWN_IDENTIFIER"},
		{"", "empty query"},
	} {
		_, err := s.Query(ctx, c.sql, "JSONEachRow")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: want an error containing %q, got %v", c.sql, c.want, err)
		}
	}
	// A block that is not Native, and a block of one kind sent as another, fail with the
	// engine's explanation; nothing is stored and the store keeps working.
	if err := s.Insert(ctx, pipeline.Block{Kind: pipeline.KindFlow, Rows: 1, Token: "junk", Native: []byte("not a native block")}); err == nil || !strings.Contains(err.Error(), "CANNOT_READ_ALL_DATA") {
		t.Errorf("junk Native bytes: want CANNOT_READ_ALL_DATA, got %v", err)
	}
	b := encode(t, pipeline.KindProbe, []pipeline.Record{&pipeline.Probe{Vantage: "x"}}, "wrong-kind")
	b.Kind = pipeline.KindTunnelStat
	if err := s.Insert(ctx, b); err == nil || !strings.Contains(err.Error(), "tunnel_stats") || !strings.Contains(err.Error(), "vantage") {
		t.Errorf("probe block into tunnel_stats: want an error naming the table and the column, got %v", err)
	}
	if got := queryString(t, s, "SELECT count() FROM tunnel_stats"); got != "0" {
		t.Errorf("tunnel_stats has %s rows after failed inserts", got)
	}
}
