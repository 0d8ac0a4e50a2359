package storage_test

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

const (
	benchRows  = 1_000_000
	benchBlock = 50_000 // the pipeline's default batch
)

// benchT0 is inside every TTL on any date (flows keep 7 days).
var benchT0 = testtime.Day

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

var (
	nodes = names("node-", 10)
	ifs   = names("wg", 4)
	keys  = names("pubkey-base64-0000000000000000000000000000-", 5000)
	peers = names("peer-", 500)
	nss   = names("ns-", 20)
	pods  = names("pod-", 1000)
	wls   = names("wl-", 200)
)

// The Go records and the engine's own INSERT ... SELECT produce the same rows.

func tunnelStat(i int) *pipeline.TunnelStat {
	return &pipeline.TunnelStat{
		M:         pipeline.Meta{Time: benchT0.Add(time.Duration(i) * time.Millisecond), Collector: "wireguard/nyc-1", Site: "nyc", Cluster: "destroyer", Node: nodes[i%10]},
		Interface: ifs[i%4], PublicKey: keys[i%5000], PeerNode: peers[i%500], PeerSite: "tokyo", Endpoint: "127.0.0.1:51820",
		AllowedIPs:    []netip.Prefix{netip.MustParsePrefix("10.10.0.2/32")},
		LastHandshake: benchT0.Add(time.Duration(i) * time.Millisecond), RxBytes: uint64(i) * 1000, TxBytes: uint64(i) * 500,
		RxRate: float64(i%1000) * 1.5, TxRate: float64(i%700) * 0.5, Keepalive: 25 * time.Second, Status: pipeline.StatusOK,
	}
}

const tunnelSQL = `INSERT INTO %[1]s SELECT
    %[3]s + toIntervalMillisecond(number),
    'wireguard/nyc-1', 'nyc', 'destroyer', concat('node-', toString(number %% 10)),
    concat('wg', toString(number %% 4)), concat('pubkey-base64-0000000000000000000000000000-', toString(number %% 5000)),
    concat('peer-', toString(number %% 500)), 'tokyo', '127.0.0.1:51820', ['10.10.0.2/32'],
    %[3]s + toIntervalMillisecond(number),
    number * 1000, number * 500, (number %% 1000) * 1.5, (number %% 700) * 0.5, 25000000000, 'ok'
FROM numbers(%[2]d)`

var labels = []string{"app=web", "tier=front"}

func flow(i int) *pipeline.Flow {
	f := &pipeline.Flow{
		M: pipeline.Meta{Time: benchT0.Add(time.Duration(i) * time.Microsecond), Collector: "hubble/destroyer", Site: "nyc", Cluster: "destroyer", Node: nodes[i%10]},
		Source: pipeline.Endpoint{Namespace: nss[i%20], Pod: pods[i%1000], Workload: wls[i%200], WorkloadKind: "Deployment", Identity: uint32(i % 5000),
			IP: netip.AddrFrom4([4]byte{10, 0, byte(i % 65536 >> 8), byte(i % 256)}), Labels: labels},
		Destination: pipeline.Endpoint{Namespace: nss[(i+7)%20], Pod: pods[(i+13)%1000], Workload: wls[(i+13)%200], WorkloadKind: "StatefulSet", Identity: uint32((i + 13) % 5000),
			IP: netip.AddrFrom4([4]byte{10, 1, byte((i + 13) % 65536 >> 8), byte((i + 13) % 256)}), Labels: labels},
		L4Protocol: "TCP", SourcePort: uint16(i % 60000), DestinationPort: 8080, Verdict: "FORWARDED", Direction: "EGRESS",
		IsReply: i%2 == 1, L7Type: "HTTP", HTTPMethod: "GET", HTTPCode: 200, HTTPPath: "/api/v1/items", L7Latency: time.Duration(i%100000) * time.Microsecond,
	}
	if i%50 == 0 {
		f.Verdict, f.DropReason = "DROPPED", "POLICY_DENIED"
	}
	return f
}

const flowSQL = `INSERT INTO %[1]s SELECT
    %[3]s + toIntervalMicrosecond(number),
    'hubble/destroyer', 'nyc', 'destroyer', concat('node-', toString(number %% 10)),
    concat('ns-', toString(number %% 20)), concat('pod-', toString(number %% 1000)), concat('wl-', toString(number %% 200)), 'Deployment',
    toUInt32(number %% 5000), toIPv6(IPv4NumToString(toUInt32(167772160 + number %% 65536))), ['app=web', 'tier=front'],
    concat('ns-', toString((number + 7) %% 20)), concat('pod-', toString((number + 13) %% 1000)), concat('wl-', toString((number + 13) %% 200)), 'StatefulSet',
    toUInt32((number + 13) %% 5000), toIPv6(IPv4NumToString(toUInt32(167837696 + (number + 13) %% 65536))), ['app=web', 'tier=front'],
    'TCP', toUInt16(number %% 60000), 8080, if(number %% 50 = 0, 'DROPPED', 'FORWARDED'), if(number %% 50 = 0, 'POLICY_DENIED', ''), 'EGRESS',
    number %% 2 = 1, 'HTTP', 'GET', 200, '/api/v1/items', toInt64(number %% 100000) * 1000, '', 0
FROM numbers(%[2]d)`

// BenchmarkStorageInsert encodes and inserts 1M TunnelStat and 1M Flow records into the
// embedded engine in 50k-row Native blocks (encoding the next block while the previous
// is inserted, as the pipeline does), against the engine's own INSERT ... SELECT ... FROM
// numbers(N) producing the same rows, in the same run (best of two alternating rounds).
func BenchmarkStorageInsert(b *testing.B) {
	s := storagetest.New(b)
	for _, c := range []struct {
		name string
		kind pipeline.Kind
		rec  func(int) pipeline.Record
		sql  string
	}{
		{"tunnel_stat", pipeline.KindTunnelStat, func(i int) pipeline.Record { return tunnelStat(i) }, tunnelSQL},
		{"flow", pipeline.KindFlow, func(i int) pipeline.Record { return flow(i) }, flowSQL},
	} {
		b.Run(c.name, func(b *testing.B) {
			table := s.Table(c.kind)
			recs := make([]pipeline.Record, benchRows)
			for i := range recs {
				recs[i] = c.rec(i)
			}
			// Best of two alternating rounds per side: the machine is shared, and a burst
			// of load on one side would otherwise decide the ratio.
			ours, engine := time.Duration(1<<62), time.Duration(1<<62)
			for range 2 * b.N {
				mustExec(b, s, "TRUNCATE TABLE "+table)
				start := time.Now()
				insertAll(b, s, c.kind, recs)
				ours = min(ours, time.Since(start))
				checkRows(b, s, table)

				mustExec(b, s, "TRUNCATE TABLE "+table)
				start = time.Now()
				mustExec(b, s, fmt.Sprintf(c.sql, table, benchRows, testtime.SQL(benchT0, 9)))
				engine = min(engine, time.Since(start))
				checkRows(b, s, table)
			}
			rate := float64(benchRows) / ours.Seconds()
			ratio := engine.Seconds() / ours.Seconds()
			b.ReportMetric(rate, "rows/s")
			b.ReportMetric(ratio, "ratio")
			fmt.Printf("ours %s, engine %s for %d rows (best of 2)\n", ours, engine, benchRows)
			fmt.Printf("BENCH storage_insert_%s %.0f rows/s ratio=%.2f\n", c.name, rate, ratio)
		})
	}
}

func insertAll(b *testing.B, s *storage.Store, kind pipeline.Kind, recs []pipeline.Record) {
	enc := storage.NewEncoder()
	blocks := make(chan pipeline.Block, 2)
	go func() {
		defer close(blocks)
		for i := 0; i < len(recs); i += benchBlock {
			batch := recs[i:min(i+benchBlock, len(recs))]
			native, err := enc.Encode(kind, batch)
			if err != nil {
				b.Error(err)
				return
			}
			blocks <- pipeline.Block{Kind: kind, Rows: len(batch), Token: fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i), Native: native}
		}
	}()
	for blk := range blocks {
		if err := s.Insert(context.Background(), blk); err != nil {
			b.Fatal(err)
		}
	}
}

func mustExec(b *testing.B, s *storage.Store, sql string) {
	if err := s.Exec(context.Background(), sql); err != nil {
		b.Fatal(err)
	}
}

func checkRows(b *testing.B, s *storage.Store, table string) {
	out, err := s.Query(context.Background(), "SELECT count() FROM "+table, "TabSeparated")
	if err != nil || string(out) != strconv.Itoa(benchRows)+"\n" {
		b.Fatalf("%s: %q rows, %v", table, out, err)
	}
}
