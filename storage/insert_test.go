package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/testtime"
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
	// The same rows under another token are a new block: deduplication is by token.
	b.Token = "batch-43"
	if err := s.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, s, "SELECT count() FROM flows"); got != "200" {
		t.Fatalf("flows rows after a second token: %s, want 200", got)
	}

	// A materialized view (flow_edges -> flows_1m) deduplicates with its source table.
	edges := encode(t, pipeline.KindFlowEdge, []pipeline.Record{&pipeline.FlowEdge{M: meta("nyc-1"), Interval: time.Second,
		SourceNamespace: "shop", SourceWorkload: "web", DestNamespace: "shop", DestWorkload: "api", Protocol: "TCP", Port: 80, Flows: 100}}, "edges-7")
	for range 3 {
		if err := s.Insert(ctx, edges); err != nil {
			t.Fatal(err)
		}
	}
	if got := queryString(t, s, "SELECT count(), sum(flows) FROM flow_edges"); got != "1\t100" {
		t.Fatalf("flow_edges (rows, flows) after 3 inserts of one token: %s, want 1, 100", got)
	}
	if got := queryString(t, s, "SELECT sum(flows) FROM flows_1m"); got != "100" {
		t.Fatalf("flows_1m after 3 inserts of one token: %s flows, want 100", got)
	}
}

func TestRollupsHoldAggregates(t *testing.T) {
	s := storagetest.New(t)
	ctx := context.Background()
	m0 := testtime.Day.Add(10 * time.Hour)
	type agg struct{ flows, drops, requests, errors int }
	want := map[string]agg{} // "minute src dst" -> sums
	var batches [2][]pipeline.Record
	for i := range 360 { // per-second edges over 3 minutes, two workload pairs
		src, dst := []string{"web", "api"}[i%2], []string{"api", "db"}[i%2]
		e := &pipeline.FlowEdge{
			M: pipeline.Meta{Time: m0.Add(time.Duration(i/2) * time.Second), Cluster: "destroyer"}, Interval: time.Second,
			SourceNamespace: "shop", SourceWorkload: src, DestNamespace: "shop", DestWorkload: dst, Protocol: "TCP", Port: 8080,
			Flows: uint64(10 + i%7), Drops: uint64(i % 3), Requests: uint64(i % 5), Errors: uint64(i % 5 / 4),
		}
		if e.Requests > 0 {
			e.LatencyP50 = time.Duration(i%5) * time.Millisecond
			e.LatencyP90, e.LatencyP99 = 2*e.LatencyP50, 3*e.LatencyP50
		}
		k := fmt.Sprintf("%s %s %s", e.M.Time.Truncate(time.Minute).Format("2006-01-02 15:04:05"), src, dst)
		a := want[k]
		a.flows, a.drops, a.requests, a.errors = a.flows+int(e.Flows), a.drops+int(e.Drops), a.requests+int(e.Requests), a.errors+int(e.Errors)
		want[k] = a
		batches[i%3%2] = append(batches[i%3%2], e) // two blocks: two parts whose states must merge
	}
	for i, b := range batches {
		if err := s.Insert(ctx, encode(t, pipeline.KindFlowEdge, b, fmt.Sprintf("rollup-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	out := queryString(t, s, `SELECT minute, src_workload, dst_workload, sum(flows), sum(drops), sum(requests), sum(errors)
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
	// Latency: the merged states equal the same weighted digest over the raw edges, and
	// edge-seconds without requests do not drag the quantiles to zero.
	rollup := queryString(t, s, `SELECT minute, src_workload,
			quantileTDigestWeightedIfMerge(0.5)(latency_p50), quantileTDigestWeightedIfMerge(0.99)(latency_p99)
		FROM flows_1m GROUP BY minute, src_workload ORDER BY minute, src_workload`)
	raw := queryString(t, s, `SELECT toStartOfMinute(time) AS minute, src_workload,
			quantileTDigestWeightedIf(0.5)(latency_p50, requests, latency_p50 > 0), quantileTDigestWeightedIf(0.99)(latency_p99, requests, latency_p99 > 0)
		FROM flow_edges GROUP BY minute, src_workload ORDER BY minute, src_workload`)
	if rollup != raw || strings.Contains(rollup, "\t0\t") {
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

// TestRollupKeepsEdgeClusters: one workload pair inside the cluster, across to another
// and in from another stays three rows of flows_1m even once its parts are merged (the
// destination and source clusters are in its sorting key, so the aggregating merge does
// not fold them into one).
func TestRollupKeepsEdgeClusters(t *testing.T) {
	s := storagetest.New(t)
	ctx := context.Background()
	m0 := testtime.Day.Add(10 * time.Hour)
	for i := range 6 {
		e := &pipeline.FlowEdge{M: pipeline.Meta{Time: m0.Add(time.Duration(i) * time.Second), Cluster: "ny-destroyer"}, Interval: time.Second,
			SourceNamespace: "shop", SourceWorkload: "web", DestNamespace: "shop", DestWorkload: "api", Protocol: "TCP", Port: 80,
			Flows: uint64(1 + i), Requests: 1, Errors: uint64(i % 2)}
		switch i % 3 {
		case 1:
			e.DestCluster = "nbg-aegis"
		case 2:
			e.SourceCluster = "nbg-aegis"
		}
		if err := s.Insert(ctx, encode(t, pipeline.KindFlowEdge, []pipeline.Record{e}, fmt.Sprintf("xsite-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Exec(ctx, "OPTIMIZE TABLE "+s.Table(pipeline.KindFlowEdge)+" FINAL"); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(ctx, "OPTIMIZE TABLE flows_1m FINAL"); err != nil {
		t.Fatal(err)
	}
	got := queryString(t, s, "SELECT count(), sum(flows) FROM flows_1m") + "; " +
		queryString(t, s, "SELECT concat('[', src_cluster, '>', dst_cluster, ']'), flows, requests, errors FROM flows_1m ORDER BY src_cluster, dst_cluster")
	if want := "3\t21; [>]\t5\t2\t1\n[>nbg-aegis]\t7\t2\t1\n[nbg-aegis>]\t9\t2\t1"; got != want {
		t.Fatalf("flows_1m rows after merging:\n got %q\nwant %q", got, want)
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
