package inventory

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

// benchWorld is a CDN-like fleet: 100,000 nodes over 100 sites, the first 50,000 with a
// WireGuard key, each with a /24 pod CIDR.
func benchWorld() (Inventory, []string) {
	var inv Inventory
	for i := range 100 {
		inv.Sites = append(inv.Sites, Site{Name: fmt.Sprintf("site-%d", i)})
	}
	keys := make([]string, 0, 50_000)
	for i := range 100_000 {
		n := Node{Name: fmt.Sprintf("edge-%06d", i), Site: inv.Sites[i%100].Name, CephHost: fmt.Sprintf("host-%06d", i),
			PodCIDRs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 24).Masked()}}
		if i < 50_000 {
			sum := sha256.Sum256([]byte(n.Name))
			n.WireGuardKey = base64.StdEncoding.EncodeToString(sum[:])
			keys = append(keys, n.WireGuardKey)
		}
		inv.Nodes = append(inv.Nodes, n)
	}
	return inv, keys
}

// BenchmarkLookup measures the indexed lookups at 100,000 nodes and 50,000 WireGuard keys
// against a plain Go map from key to node (what the collectors used to build), over the
// same keys in the same order. It loops by itself, so `-benchtime 1x` (make bench) gives
// stable figures.
func BenchmarkSnapshotBuild(b *testing.B) {
	inv, _ := benchWorld()
	b.ResetTimer()
	for range b.N {
		NewSnapshot(1, inv)
	}
}

// BenchmarkSnapshotNext: one node of 100,000 moves to another site (a Node label
// change). The snapshot built from the previous one against a full build of the same
// inventory, alone and with the merge of the file's part and the cluster's that
// Live.Set runs before it; best of three each, the two snapshots checked equal.
func BenchmarkSnapshotNext(b *testing.B) {
	inv, _ := benchWorld()
	file := Inventory{Sites: inv.Sites[:10]}
	prev := NewSnapshot(1, merge([]Inventory{file, inv}))
	changed := inv
	changed.Nodes = slices.Clone(inv.Nodes)
	changed.Nodes[50_000].Site = "site-1"
	best := func(f func() *Snapshot) (time.Duration, *Snapshot) {
		d, s := time.Duration(1<<62), (*Snapshot)(nil)
		for range 3 {
			t0 := time.Now()
			s = f()
			d = min(d, time.Since(t0))
		}
		return d, s
	}
	merged := merge([]Inventory{file, changed})
	for range b.N {
		full, fs := best(func() *Snapshot { return NewSnapshot(2, merged) })
		next, ns := best(func() *Snapshot { return prev.next(2, merged) })
		fullSet, _ := best(func() *Snapshot { return NewSnapshot(2, merge([]Inventory{file, changed})) })
		nextSet, _ := best(func() *Snapshot { return prev.next(2, merge([]Inventory{file, changed})) })
		if !reflect.DeepEqual(fs, ns) {
			b.Fatal("the incremental snapshot differs from the full build")
		}
		if n, ok := ns.Node(changed.Nodes[50_000].Name); !ok || n.Site != "site-1" {
			b.Fatalf("the changed node reads %+v, %v", n, ok)
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		fmt.Printf("BENCH inventory_snapshot_one_node_change_100k %.1f ms ratio=%.3f (vs a full build: %.1f ms)\n", ms(next), float64(next)/float64(full), ms(full))
		fmt.Printf("BENCH inventory_set_one_node_change_100k %.1f ms ratio=%.3f (merge + snapshot, vs merge + full build: %.1f ms)\n", ms(nextSet), float64(nextSet)/float64(fullSet), ms(fullSet))
	}
}

func BenchmarkLookup(b *testing.B) {
	inv, keys := benchWorld()
	start := time.Now()
	s := NewSnapshot(1, inv)
	build := time.Since(start)
	plain := make(map[string]Node, len(keys))
	for _, n := range inv.Nodes[:len(keys)] {
		plain[n.WireGuardKey] = n
	}
	const rounds = 20
	var sink int
	// The best of three passes: the machine is shared, and the first pass warms caches.
	perOp := func(f func(string) (Node, bool)) float64 {
		best := time.Duration(1 << 62)
		for range 3 {
			t0 := time.Now()
			for range rounds {
				for _, k := range keys {
					if n, ok := f(k); ok {
						sink += len(n.Name)
					}
				}
			}
			best = min(best, time.Since(t0))
		}
		return float64(best.Nanoseconds()) / float64(rounds*len(keys))
	}
	b.ResetTimer()
	for range b.N {
		mapNs := perOp(func(k string) (Node, bool) { n, ok := plain[k]; return n, ok })
		keyNs := perOp(s.NodeByWireGuardKey)
		names := make([]string, len(keys))
		for i := range names {
			names[i] = inv.Nodes[i*2].Name
		}
		keys, names = names, keys // the same loop over node names
		nameNs := perOp(s.Node)
		keys, names = names, keys
		ips := make([]netip.Addr, len(keys))
		for i := range ips {
			ips[i] = inv.Nodes[i*2].PodCIDRs[0].Addr().Next()
		}
		best := time.Duration(1 << 62)
		for range 3 {
			t0 := time.Now()
			for range rounds {
				for _, a := range ips {
					if n, ok := s.NodeByPodIP(a); ok {
						sink += len(n.Name)
					}
				}
			}
			best = min(best, time.Since(t0))
		}
		podNs := float64(best.Nanoseconds()) / float64(rounds*len(ips))
		b.ReportMetric(keyNs, "ns/key-lookup")
		b.ReportMetric(mapNs, "ns/map-lookup")
		fmt.Printf("BENCH inventory_wireguard_key_lookup %.1f ns ratio=%.3f (100,000 nodes, 50,000 keys; a Go map lookup: %.1f ns)\n", keyNs, keyNs/mapNs, mapNs)
		fmt.Printf("BENCH inventory_node_lookup %.1f ns ratio=%.3f\n", nameNs, nameNs/mapNs)
		fmt.Printf("BENCH inventory_pod_ip_lookup %.1f ns ratio=%.3f\n", podNs, podNs/mapNs)
		fmt.Printf("BENCH inventory_snapshot_build_100k %d ms ratio=%.3f (vs the 250 ms debounce)\n", build.Milliseconds(), float64(build)/float64(250*time.Millisecond))
	}
	if sink == 0 {
		b.Fatal("no lookup found anything")
	}
}
