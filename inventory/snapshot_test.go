package inventory

import (
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	keyA = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	keyB = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
)

// lookupWorld has a conflict of each kind: a shared WireGuard key, a Ceph host that is
// another node's name, nested pod CIDRs, two VIPs.
func lookupWorld() Inventory {
	return Inventory{
		Sites: []Site{{Name: "paris"}, {Name: "nyc"}},
		Nodes: []Node{
			{Name: "p1", Site: "paris", WireGuardKey: keyA, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.1.0/24"), netip.MustParsePrefix("fd00:1:1::/64")}},
			{Name: "vault-1", Site: "nyc", CephHost: "vm"},
			{Name: "vm", Site: "nyc"},                       // its name is vault-1's ceph_host: the explicit one wins
			{Name: "p2", Site: "paris", WireGuardKey: keyA}, // claims p1's key: p1 keeps it
			{Name: "p3", Site: "paris", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
		},
		POPs:      []POP{{Name: "paris", Site: "paris", VIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}},
		Workloads: []Workload{{Cluster: "c", Namespace: "shop", Name: "web", Kind: "StatefulSet"}, {Cluster: "c", Namespace: "shop", Name: "api-v2", Kind: "Deployment"}},
	}
}

func TestSnapshotLookups(t *testing.T) {
	inv := lookupWorld()
	s := NewSnapshot(7, inv)
	node := func(n Node, ok bool) string {
		if !ok {
			return "-"
		}
		return n.Name
	}
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"node by name", node(s.Node("p1")), "p1"},
		{"unknown node", node(s.Node("p9")), "-"},
		{"wireguard key", node(s.NodeByWireGuardKey(keyA)), "p1"},
		{"unknown key", node(s.NodeByWireGuardKey(keyB)), "-"},
		{"empty key", node(s.NodeByWireGuardKey("")), "-"},
		{"explicit ceph host", node(s.NodeByCephHost("vm")), "vault-1"},
		{"ceph host defaults to the name", node(s.NodeByCephHost("p1")), "p1"},
		{"pod IP, longest prefix", node(s.NodeByPodIP(netip.MustParseAddr("10.1.1.7"))), "p1"},
		{"pod IP, shorter prefix", node(s.NodeByPodIP(netip.MustParseAddr("10.1.2.7"))), "p3"},
		{"pod IPv6", node(s.NodeByPodIP(netip.MustParseAddr("fd00:1:1::42"))), "p1"},
		{"IPv4-mapped pod IP", node(s.NodeByPodIP(netip.MustParseAddr("::ffff:10.1.1.7"))), "p1"},
		{"pod IP outside every CIDR", node(s.NodeByPodIP(netip.MustParseAddr("10.2.0.1"))), "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %s, want %s", tc.got, tc.want)
			}
		})
	}
	if p, ok := s.POPByVIP(netip.MustParseAddr("2001:db8::1")); !ok || p.Name != "paris" {
		t.Fatalf("POP by VIP: %v %v", p, ok)
	}
	if _, ok := s.Site("nyc"); !ok || s.Version() != 7 {
		t.Fatal("site or version")
	}
	if c := s.Conflicts(); len(c) != 1 || !strings.Contains(c[0].Error(), "WireGuard key "+keyA+" of node p2 is already node p1's") {
		t.Fatalf("conflicts: %v", c)
	}
	for _, tc := range []struct{ pod, want string }{
		{"web-0", "StatefulSet web"}, {"web-12", "StatefulSet web"},
		{"api-v2-7d9f8b6c5d-x2x4z", "Deployment api-v2"},
		{"api-v2-x2x4z", "-"}, // one suffix: not a Deployment's pod
		{"web", "-"}, {"other-0", "-"},
	} {
		w, ok := s.WorkloadOfPod("c", "shop", tc.pod)
		got := "-"
		if ok {
			got = w.Kind + " " + w.Name
		}
		if got != tc.want {
			t.Errorf("pod %s: %s, want %s", tc.pod, got, tc.want)
		}
	}
	if _, ok := s.WorkloadOfPod("other-cluster", "shop", "web-0"); ok {
		t.Error("a workload of another cluster matched")
	}
}

// TestMergeOrder: the first source owns an entry; later ones only fill its empty fields.
// TestSnapshotNext: a snapshot built from the previous one (reusing the indices a change
// leaves valid) is exactly the snapshot built from scratch, for each kind of change; an
// unchanged identity index is shared, not rebuilt.
func TestSnapshotNext(t *testing.T) {
	for _, tc := range []struct {
		name     string
		change   func(*Inventory)
		keepsIDs bool // the node identity indices are prev's
	}{
		{"nothing", func(*Inventory) {}, true},
		{"a node's site", func(i *Inventory) { i.Nodes[4].Site = "nyc" }, true},
		{"a node's cluster", func(i *Inventory) { i.Nodes[0].Cluster = "c" }, true},
		{"a key taken by another node", func(i *Inventory) { i.Nodes[3].WireGuardKey = keyB }, false},
		{"a key claimed twice more", func(i *Inventory) { i.Nodes[4].WireGuardKey = keyA }, false},
		{"a ceph host", func(i *Inventory) { i.Nodes[1].CephHost = "" }, false},
		{"a pod CIDR", func(i *Inventory) { i.Nodes[4].PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.1.1.0/24")} }, false},
		{"a node added", func(i *Inventory) { i.Nodes = append(i.Nodes, Node{Name: "p4", WireGuardKey: keyB}) }, false},
		{"a node removed", func(i *Inventory) { i.Nodes = slices.Delete(i.Nodes, 0, 1) }, false},
		{"nodes reordered", func(i *Inventory) { i.Nodes[0], i.Nodes[3] = i.Nodes[3], i.Nodes[0] }, false},
		{"a VIP", func(i *Inventory) { i.POPs[0].VIPs = append(i.POPs[0].VIPs, netip.MustParseAddr("192.0.2.1")) }, true},
		{"a workload and a namespace", func(i *Inventory) {
			i.Workloads = append(i.Workloads, Workload{Cluster: "c", Namespace: "shop", Name: "db", Kind: "StatefulSet"})
			i.Namespaces = append(i.Namespaces, Namespace{Cluster: "c", Name: "shop"})
		}, true},
		{"a site added", func(i *Inventory) { i.Sites = append(i.Sites, Site{Name: "tokyo"}) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := NewSnapshot(1, lookupWorld())
			inv := lookupWorld()
			tc.change(&inv)
			got, want := prev.next(2, inv), NewSnapshot(2, inv)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("incremental snapshot differs from a full build:\n got %+v\nwant %+v", got, want)
			}
			if shared := reflect.ValueOf(got.keys).Pointer() == reflect.ValueOf(prev.keys).Pointer(); shared != tc.keepsIDs {
				t.Errorf("node identity indices shared: %v, want %v", shared, tc.keepsIDs)
			}
		})
	}
}

func TestMergeOrder(t *testing.T) {
	l, err := NewLive(discard(), nil, SourceYAML, "kubernetes/a", "karmada")
	if err != nil {
		t.Fatal(err)
	}
	must(t, l.Set("kubernetes/a", Inventory{
		Sites:    []Site{{Name: "paris", Region: "eu-west", Lat: 1, Lon: 1}, {Name: "zone-b", Region: "eu-west"}},
		Clusters: []Cluster{{Name: "a", Site: "zone-b"}},
		Nodes:    []Node{{Name: "p1", Site: "zone-b", Cluster: "a", WireGuardKey: keyA}, {Name: "k1", Site: "zone-b", Cluster: "a"}},
	}))
	must(t, l.Set(SourceYAML, Inventory{
		Sites:    []Site{{Name: "paris", Lat: 48.86, Lon: 2.35}},
		Clusters: []Cluster{{Name: "a", Site: "paris"}},
		Nodes:    []Node{{Name: "p1", Site: "paris", Cluster: "a"}},
	}))
	must(t, l.Set("karmada", Inventory{Clusters: []Cluster{{Name: "a", Region: "eu-west", Provider: "hetzner"}, {Name: "b", Region: "us-east"}}}))
	s := l.Snapshot()
	if s.Version() != 3 {
		t.Fatalf("version %d after 3 changes", s.Version())
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"file's site coordinates win", mustGet(s.Site("paris")).Lat, 48.86},
		{"empty region filled from Kubernetes", mustGet(s.Site("paris")).Region, "eu-west"},
		{"file's node site wins", mustGet(s.Node("p1")).Site, "paris"},
		{"key filled from the annotation", mustGet(s.Node("p1")).WireGuardKey, keyA},
		{"node only in the API", mustGet(s.Node("k1")).Site, "zone-b"},
		{"file's cluster site wins", mustGet(s.Cluster("a")).Site, "paris"},
		{"provider filled from Karmada", mustGet(s.Cluster("a")).Provider, "hetzner"},
		{"cluster only in Karmada", mustGet(s.Cluster("b")).Region, "us-east"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if err := l.Set("nowhere", Inventory{}); err == nil {
		t.Error("unknown source accepted")
	}
}

// TestSubscribe: a subscriber sees every change eventually and always the newest.
func TestSubscribe(t *testing.T) {
	l := Static(&Inventory{Nodes: []Node{{Name: "a"}}})
	ch, cancel := l.Subscribe()
	defer cancel()
	for i := range 5 {
		must(t, l.Set(SourceYAML, Inventory{Nodes: []Node{{Name: "a"}, {Name: string(rune('b' + i))}}}))
	}
	select {
	case s := <-ch:
		if s.Version() != 6 || s != l.Snapshot() {
			t.Fatalf("got version %d, want the newest (6)", s.Version())
		}
	case <-time.After(time.Second):
		t.Fatal("no change signalled")
	}
	select {
	case s := <-ch:
		t.Fatalf("a stale snapshot %d queued", s.Version())
	default:
	}
	cancel()
	must(t, l.Set(SourceYAML, Inventory{}))
	select {
	case <-ch:
		t.Fatal("signalled after cancel")
	default:
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustGet[T any](v T, ok bool) T { return v }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
