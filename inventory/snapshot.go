package inventory

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Snapshot is one version of the merged world with an index per identity. It is
// immutable: every change makes a new Snapshot, so a reader holding one sees a consistent
// world for as long as it likes, without locks. Lookups cost one map access each.
type Snapshot struct {
	version uint64
	inv     Inventory

	sites, clusters, nodes, pops map[string]int32
	keys, cephHosts              map[string]int32 // WireGuard public key, Ceph host name -> node
	vips                         map[netip.Addr]int32
	pods                         podIndex
	workloads                    map[workloadKey]int32
	namespaces                   map[[2]string]struct{} // (cluster, name)
	nodeConflicts, vipConflicts  []error
	conflicts                    []error // both, nodes' first
}

type workloadKey struct{ cluster, namespace, kind, name string }

// podIndex maps a pod address to the node whose pod CIDR holds it: one map per prefix
// length in use (usually one or two: a /24 and a /64), longest first.
type podIndex struct {
	bits []int
	nets map[int]map[netip.Prefix]int32
}

// NewSnapshot indexes inv. When two entries claim one identity (a WireGuard key, a Ceph
// host, a VIP, a pod CIDR), the one listed first keeps it and Conflicts names the other.
func NewSnapshot(version uint64, inv Inventory) *Snapshot { return newSnapshot(version, inv, nil) }

// next is NewSnapshot(version, inv) built from prev: an index whose inputs inv leaves as
// they were in prev (the same names at the same positions; for the identity indices the
// same identities too) is prev's, shared (snapshots never change). A single node's new
// site or region at 100,000 nodes then costs comparisons, not a rebuild of every map.
func (prev *Snapshot) next(version uint64, inv Inventory) *Snapshot {
	return newSnapshot(version, inv, prev)
}

func newSnapshot(version uint64, inv Inventory, prev *Snapshot) *Snapshot {
	var old Inventory
	if prev != nil {
		old = prev.inv
	}
	s := &Snapshot{version: version, inv: inv}
	reuse := func(same bool) bool { return prev != nil && same }
	if reuse(sameNames(old.Sites, inv.Sites, func(x *Site) string { return x.Name })) {
		s.sites = prev.sites
	} else {
		s.sites = index(inv.Sites, func(x *Site) string { return x.Name })
	}
	if reuse(sameNames(old.Clusters, inv.Clusters, func(x *Cluster) string { return x.Name })) {
		s.clusters = prev.clusters
	} else {
		s.clusters = index(inv.Clusters, func(x *Cluster) string { return x.Name })
	}
	if reuse(slices.EqualFunc(old.Nodes, inv.Nodes, sameNodeIdentity)) {
		s.nodes, s.keys, s.cephHosts, s.pods, s.nodeConflicts = prev.nodes, prev.keys, prev.cephHosts, prev.pods, prev.nodeConflicts
	} else {
		s.nodes = index(inv.Nodes, func(x *Node) string { return x.Name })
		s.indexNodes()
	}
	if reuse(slices.EqualFunc(old.POPs, inv.POPs, func(a, b POP) bool { return a.Name == b.Name && slices.Equal(a.VIPs, b.VIPs) })) {
		s.pops, s.vips, s.vipConflicts = prev.pops, prev.vips, prev.vipConflicts
	} else {
		s.pops = index(inv.POPs, func(x *POP) string { return x.Name })
		s.indexVIPs()
	}
	s.conflicts = append(slices.Clip(s.nodeConflicts), s.vipConflicts...)
	if reuse(slices.Equal(old.Workloads, inv.Workloads)) {
		s.workloads = prev.workloads
	} else {
		s.workloads = make(map[workloadKey]int32, len(inv.Workloads))
		for i, w := range inv.Workloads {
			s.workloads[workloadKey{w.Cluster, w.Namespace, w.Kind, w.Name}] = int32(i)
		}
	}
	if reuse(slices.Equal(old.Namespaces, inv.Namespaces)) {
		s.namespaces = prev.namespaces
	} else {
		s.namespaces = make(map[[2]string]struct{}, len(inv.Namespaces))
		for _, n := range inv.Namespaces {
			s.namespaces[[2]string{n.Cluster, n.Name}] = struct{}{}
		}
	}
	return s
}

func sameNames[T any](a, b []T, name func(*T) string) bool {
	return slices.EqualFunc(a, b, func(x, y T) bool { return name(&x) == name(&y) })
}

// sameNodeIdentity: a and b have the same entries in every node index.
func sameNodeIdentity(a, b Node) bool {
	return a.Name == b.Name && a.WireGuardKey == b.WireGuardKey && a.CephHost == b.CephHost && slices.Equal(a.PodCIDRs, b.PodCIDRs)
}

// claim reports whether an identity is free; when it is not, it names the conflict.
func (s *Snapshot) claim(conflicts *[]error, taken bool, what string, id any, ownerKind, owner string, prev int32) bool {
	if taken {
		*conflicts = append(*conflicts, fmt.Errorf("%s %v of %s %s is already %s's; the first keeps it", what, id, ownerKind, owner, s.ownerName(what, prev)))
	}
	return !taken
}

// indexNodes builds the node identity indices: WireGuard key, Ceph host, pod CIDR.
func (s *Snapshot) indexNodes() {
	inv := &s.inv
	s.keys, s.cephHosts = map[string]int32{}, make(map[string]int32, len(inv.Nodes))
	s.pods = podIndex{nets: map[int]map[netip.Prefix]int32{}}
	s.nodeConflicts = nil
	claim := func(taken bool, what string, id any, owner string, prev int32) bool {
		return s.claim(&s.nodeConflicts, taken, what, id, "node", owner, prev)
	}
	for i := range inv.Nodes {
		n := &inv.Nodes[i]
		if k := n.WireGuardKey; k != "" {
			prev, taken := s.keys[k]
			if claim(taken, "WireGuard key", k, n.Name, prev) {
				s.keys[k] = int32(i)
			}
		}
		// An explicit ceph_host wins over a node name (second pass below).
		if h := n.CephHost; h != "" {
			prev, taken := s.cephHosts[h]
			if claim(taken, "Ceph host", h, n.Name, prev) {
				s.cephHosts[h] = int32(i)
			}
		}
		for _, p := range n.PodCIDRs {
			p = p.Masked()
			m := s.pods.nets[p.Bits()]
			if m == nil {
				m = make(map[netip.Prefix]int32, len(inv.Nodes))
				s.pods.nets[p.Bits()] = m
				s.pods.bits = append(s.pods.bits, p.Bits())
			}
			prev, taken := m[p]
			if !taken || claim(taken, "pod CIDR", p, n.Name, prev) {
				m[p] = int32(i)
			}
		}
	}
	for i := range inv.Nodes {
		if n := &inv.Nodes[i]; n.CephHost == "" {
			if _, taken := s.cephHosts[n.Name]; !taken {
				s.cephHosts[n.Name] = int32(i)
			}
		}
	}
	slices.SortFunc(s.pods.bits, func(a, b int) int { return b - a })
}

// indexVIPs builds the POP VIP index.
func (s *Snapshot) indexVIPs() {
	s.vips, s.vipConflicts = map[netip.Addr]int32{}, nil
	for i := range s.inv.POPs {
		for _, a := range s.inv.POPs[i].VIPs {
			a = a.Unmap()
			prev, taken := s.vips[a]
			if !taken || s.claim(&s.vipConflicts, taken, "VIP", a, "POP", s.inv.POPs[i].Name, prev) {
				s.vips[a] = int32(i)
			}
		}
	}
}

func (s *Snapshot) ownerName(what string, i int32) string {
	if what == "VIP" {
		return "POP " + s.inv.POPs[i].Name
	}
	return "node " + s.inv.Nodes[i].Name
}

// index maps each entry's name to its position; a repeated name keeps the first.
func index[T any](items []T, name func(*T) string) map[string]int32 {
	m := make(map[string]int32, len(items))
	for i := range items {
		if n := name(&items[i]); n != "" {
			if _, dup := m[n]; !dup {
				m[n] = int32(i)
			}
		}
	}
	return m
}

// Version increases with every change of the merged world.
func (s *Snapshot) Version() uint64 { return s.version }

// Inventory is the merged world. Callers must not modify it: it is shared.
func (s *Snapshot) Inventory() *Inventory { return &s.inv }

// Conflicts names the identities two entries claimed (the first kept each).
func (s *Snapshot) Conflicts() []error { return s.conflicts }

func get[T any](items []T, m map[string]int32, k string) (T, bool) {
	if i, ok := m[k]; ok {
		return items[i], true
	}
	var zero T
	return zero, false
}

// Site returns the named site.
func (s *Snapshot) Site(name string) (Site, bool) { return get(s.inv.Sites, s.sites, name) }

// Cluster returns the named cluster.
func (s *Snapshot) Cluster(name string) (Cluster, bool) { return get(s.inv.Clusters, s.clusters, name) }

// Node returns the named node.
func (s *Snapshot) Node(name string) (Node, bool) { return get(s.inv.Nodes, s.nodes, name) }

// POP returns the named POP.
func (s *Snapshot) POP(name string) (POP, bool) { return get(s.inv.POPs, s.pops, name) }

// NodeByWireGuardKey returns the node owning a WireGuard public key.
func (s *Snapshot) NodeByWireGuardKey(key string) (Node, bool) {
	return get(s.inv.Nodes, s.keys, key)
}

// NodeByCephHost returns the node Ceph calls host: the node whose ceph_host it is, else
// the node of that name.
func (s *Snapshot) NodeByCephHost(host string) (Node, bool) {
	return get(s.inv.Nodes, s.cephHosts, host)
}

// NodeByPodIP returns the node whose pod CIDR holds a (the longest match).
func (s *Snapshot) NodeByPodIP(a netip.Addr) (Node, bool) {
	a = a.Unmap()
	for _, b := range s.pods.bits {
		p, err := a.Prefix(b)
		if err != nil {
			continue // a /64 against an IPv4 address
		}
		if i, ok := s.pods.nets[b][p]; ok {
			return s.inv.Nodes[i], true
		}
	}
	return Node{}, false
}

// POPByVIP returns the POP answering on a VIP.
func (s *Snapshot) POPByVIP(a netip.Addr) (POP, bool) {
	if i, ok := s.vips[a.Unmap()]; ok {
		return s.inv.POPs[i], true
	}
	return POP{}, false
}

// HasNamespace reports whether the cluster's API lists the namespace.
func (s *Snapshot) HasNamespace(cluster, name string) bool {
	_, ok := s.namespaces[[2]string{cluster, name}]
	return ok
}

// WorkloadOfPod returns the Deployment or StatefulSet a pod of that name belongs to, as
// the cluster's API lists them: a StatefulSet's pods are <name>-<ordinal>, a
// Deployment's <name>-<ReplicaSet hash>-<suffix>. Reading owners from the API instead of
// guessing from the name alone tells a StatefulSet "web" (pod web-0) from a pod named
// "web-0", and never cuts a Deployment's own dashes.
func (s *Snapshot) WorkloadOfPod(cluster, namespace, pod string) (Workload, bool) {
	if len(s.workloads) == 0 {
		return Workload{}, false
	}
	i := strings.LastIndexByte(pod, '-')
	if i <= 0 {
		return Workload{}, false
	}
	if ordinal(pod[i+1:]) {
		if j, ok := s.workloads[workloadKey{cluster, namespace, "StatefulSet", pod[:i]}]; ok {
			return s.inv.Workloads[j], true
		}
	}
	if j := strings.LastIndexByte(pod[:i], '-'); j > 0 {
		if k, ok := s.workloads[workloadKey{cluster, namespace, "Deployment", pod[:j]}]; ok {
			return s.inv.Workloads[k], true
		}
	}
	return Workload{}, false
}

func ordinal(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' })
}
