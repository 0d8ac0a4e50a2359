package wireguard

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meridianhq/meridian/inventory"
)

// genDump writes a `wg show all dump` of n peers shaped like the real sample's lines,
// and an inventory knowing every peer key.
func genDump(b *testing.B, n int, shift uint64) ([]byte, *inventory.Inventory) {
	var buf bytes.Buffer
	inv := &inventory.Inventory{Sites: []inventory.Site{{Name: "s"}}}
	local, _ := wgtypes.GeneratePrivateKey()
	fmt.Fprintf(&buf, "wg0\t%s\t%s\t51820\toff\n", local, local.PublicKey())
	for i := range n {
		var k wgtypes.Key
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		inv.Nodes = append(inv.Nodes, inventory.Node{Name: fmt.Sprintf("n%d", i), Site: "s", WireGuardKey: k.String()})
		fmt.Fprintf(&buf, "wg0\t%s\t(none)\t10.%d.%d.%d:51820\t10.90.%d.%d/32,10.%d.%d.0/24\t%d\t%d\t%d\t25\n",
			k, i>>16&255, i>>8&255, i&255, i>>8&255, i&255, i>>8&255, i&255, 1700000000+i%100, 18576788764+shift*uint64(i), 10642564136+shift)
	}
	return buf.Bytes(), inv
}

// BenchmarkDump10kPeers parses a 10,000-peer dump and turns it into records with rates,
// statuses and inventory mapping (the work of one scrape of one source), after a first
// scrape has built the per-peer state. ratio = time for the whole dump / the default
// 15 s scrape interval: how much of one interval the work takes (well below 1 is the goal).
func BenchmarkDump10kPeers(b *testing.B) {
	const n = 10000
	first, inv := genDump(b, n, 0)
	second, _ := genDump(b, n, 1000)
	var cfg Config
	cfg.RegisterFlags(flagSet())
	c, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(), Inventory: inventory.Static(inv)})
	if err != nil {
		b.Fatal(err)
	}
	idx := c.inv.Snapshot()
	now := time.Unix(1700000050, 0)
	peers, errs := ParseDump("bench", first)
	if len(peers) != n || len(errs) != 0 {
		b.Fatalf("%d peers, %v", len(peers), errs)
	}
	c.records("bench", peers, now, idx)

	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		now = now.Add(15 * time.Second)
		peers, _ := ParseDump("bench", second)
		recs := c.records("bench", peers, now, idx)
		if len(recs) != n {
			b.Fatalf("%d records", len(recs))
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	allocs := float64(ms1.Mallocs-ms0.Mallocs) / float64(b.N) / n
	bytesPer := float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(b.N) / n
	fmt.Printf("wireguard: %d peers in %v; %.1f allocs and %.0f B allocated per peer\n", n, per, allocs, bytesPer)
	fmt.Printf("BENCH wireguard_dump_10k_peers %.2f us/peer ratio=%.5f\n", per.Seconds()*1e6/n, per.Seconds()/cfg.Interval.Seconds())
}
