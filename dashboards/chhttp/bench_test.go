package chhttp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// BenchmarkSelect200k reads 200,000 tunnel rows (time, site, peer_node, rx_rate) through
// the endpoint with clickhouse-go (HTTP, Native re-encoded for its revision) and compares
// it with the same query straight from the store (Native bytes, no HTTP, no decoding).
func BenchmarkSelect200k(b *testing.B) {
	e := newEndpoint(b, 256<<20)
	const rows = 200_000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.store.Exec(ctx, fmt.Sprintf(`INSERT INTO tunnel_stats (time, site, node, peer_node, rx_rate, status)
		SELECT now64(3) - number, ['nyc', 'tyo', 'nbg'][number %% 3 + 1], concat('n', toString(number %% 50)), concat('p', toString(number %% 70)), number / 3, 'ok'
		FROM numbers(%d)`, rows)); err != nil {
		b.Fatal(err)
	}
	const query = "SELECT time, site, peer_node, rx_rate FROM tunnel_stats WHERE collector = ''"
	conn, err := clickhouse.Open(&clickhouse.Options{
		Protocol: clickhouse.HTTP, Addr: []string{e.addr}, HttpUrlPath: prefix,
		Auth: clickhouse.Auth{Username: user, Password: password},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()

	var direct, endpoint time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := e.store.Query(ctx, query, "Native"); err != nil {
			b.Fatal(err)
		}
		direct += time.Since(start)

		start = time.Now()
		rs, err := conn.Query(ctx, query)
		if err != nil {
			b.Fatal(err)
		}
		var (
			n          int
			tm         time.Time
			site, peer string
			rate       float64
		)
		for rs.Next() {
			if err := rs.Scan(&tm, &site, &peer, &rate); err != nil {
				b.Fatal(err)
			}
			n++
		}
		rs.Close()
		endpoint += time.Since(start)
		if n != rows {
			b.Fatalf("read %d rows, want %d", n, rows)
		}
	}
	per := endpoint / time.Duration(b.N)
	fmt.Printf("BENCH chhttp_select_200k_rows %.1f ms ratio=%.2f\n", float64(per.Microseconds())/1000, float64(endpoint)/float64(direct))
}
