package topomap

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// Rules are the thresholds of the status rules (see README "Status rules").
type Rules struct {
	StaleAfter         time.Duration // no observation for this long: unknown
	ExpireAfter        time.Duration // observed-only elements unseen for this long are removed
	OSDLatencyDegraded time.Duration
	ProbeRTTDegraded   time.Duration
	FlowErrorDegraded  float64 // error ratio
}

type nodeState struct {
	n         *Node
	base      string // directly observed status: OSD up/in, cluster Ceph health
	alert     string // status implied by firing alerts, "" when none
	seen      time.Time
	inventory bool   // declared in the inventory: never expires
	stale     bool   // aged to unknown since its last observation
	in        [4]int // statuses of the inputs (edges, children) by severity, kept incrementally
}

type edgeState struct {
	e        *Edge
	base     string
	alert    string
	seen     time.Time
	sides    [2]tunnelSide // tunnels: each end's latest report, source end first
	counted  bool          // its status is counted in its ends' inputs
	weightAt time.Time     // steer edges: when the weight shown was decided
	clientAt time.Time     // flows across clusters: the time of the latest view from the client's relay
}

// tunnelSide is one end's report of a tunnel; status "" when none is held.
type tunnelSide struct {
	status string
	bps    float64
	rx, tx float64
	seen   time.Time
}

// graph is the mutable map. Records and alerts change it under mu; flush hands the tick
// the changed elements as immutable clones.
type graph struct {
	mu    sync.Mutex
	rules Rules
	inv   *inventory.Inventory
	now   func() time.Time

	nodes    map[string]*nodeState
	edges    map[string]*edgeState
	adj      map[string]map[string]struct{} // node id -> ids of edges touching it
	children map[string]map[string]struct{} // parent id -> child node ids
	siteRTT  map[[2]string]float64          // (site, site) -> latest probe RTT in ms

	dirtyNodes, dirtyEdges     map[string]struct{}
	removedNodes, removedEdges map[string]struct{}
	recompute                  map[string]struct{}
	firstDirty                 time.Time // oldest unflushed change, for the delay metric

	unmapped map[string]int // records naming something outside the inventory, by kind
	seeding  bool
	// bulk: the graph is being built whole (a past state): nothing is marked changed, and
	// the next settle computes every status once instead of through each change.
	bulk bool

	since       map[string]time.Time // element id -> when its status last changed
	effects     map[string]struct{}  // degraded or down flows, workloads, POPs, regions
	causesStale bool                 // a status that can change an effect's causes changed

	frontDoors map[string]*frontDoor // POP -> its HAProxy load and VRRP states (frontdoor.go)
}

func newGraph(inv *inventory.Inventory, rules Rules, now func() time.Time) *graph {
	g := &graph{
		rules: rules, inv: inv, now: now,
		nodes: map[string]*nodeState{}, edges: map[string]*edgeState{},
		adj: map[string]map[string]struct{}{}, children: map[string]map[string]struct{}{},
		siteRTT:    map[[2]string]float64{},
		dirtyNodes: map[string]struct{}{}, dirtyEdges: map[string]struct{}{},
		removedNodes: map[string]struct{}{}, removedEdges: map[string]struct{}{},
		recompute: map[string]struct{}{}, unmapped: map[string]int{},
		since: map[string]time.Time{}, effects: map[string]struct{}{},
	}
	g.seed()
	return g
}

// seed adds every inventory element with status unknown until something is observed.
func (g *graph) seed() {
	if g.inv == nil {
		return
	}
	g.seeding = true
	defer func() { g.seeding = false }()
	for _, s := range g.inv.Sites {
		n := g.node(siteID(s.Name), KindSite, s.Name, "", "")
		n.inventory = true
		n.n.Attrs = map[string]string{"region": s.Region, "role": s.Role, "city": s.City}
	}
	for _, c := range g.inv.Clusters {
		g.node(clusterID(c.Name), KindCluster, c.Site, c.Name, "").inventory = true
	}
	for _, nd := range g.inv.Nodes {
		n := g.node(nodeID(nd.Name), KindNode, nd.Site, nd.Cluster, nd.Name)
		n.inventory = true
		if nd.CephHost != "" {
			n.n.Attrs = map[string]string{"ceph_host": nd.CephHost}
		}
	}
	for _, p := range g.inv.POPs {
		n := g.node(popID(p.Name), KindPOP, p.Site, "", p.Name)
		n.inventory = true
		n.n.Metrics = map[string]float64{"base_weight": baseWeight(p)}
	}
	for _, r := range g.inv.ClientRegions {
		n := g.node(regionID(r.Name), KindRegion, "", "", r.Name)
		n.inventory = true
		n.n.Geo = regionGeo(r)
		n.n.Attrs = map[string]string{
			"continents": strings.Join(r.Continents, ","), "countries": strings.Join(r.Countries, ","),
		}
	}
	// Steering's region for clients no configured region matches (steering.DefaultRegion)
	// is steered like any other: declared, though no place on the map.
	if _, ok := g.nodes[regionID(defaultRegion)]; !ok {
		g.node(regionID(defaultRegion), KindRegion, "", "", defaultRegion).inventory = true
	}
}

const defaultRegion = "default"

func baseWeight(p inventory.POP) float64 {
	if p.BaseWeight > 0 {
		return p.BaseWeight
	}
	return 1
}

func siteID(s string) string    { return "site:" + s }
func clusterID(c string) string { return "cluster:" + c }
func nodeID(n string) string    { return "node:" + n }
func popID(p string) string     { return "pop:" + p }
func regionID(r string) string  { return "region:" + r }

// node returns the node with id, creating it with status unknown when it is new: a
// reference to something the inventory does not know becomes an unknown node, never a drop.
func (g *graph) node(id, kind, site, cluster, label string) *nodeState {
	if ns, ok := g.nodes[id]; ok {
		return ns
	}
	if label == "" {
		label = strings.TrimPrefix(id, kind+":")
	}
	if kind == KindSite {
		site = label
	}
	n := &Node{ID: id, Kind: kind, Label: label, Status: pipeline.StatusUnknown, Site: site, Cluster: cluster}
	switch kind {
	case KindSite:
	case KindCluster:
		if site != "" {
			n.Parent = siteID(site)
		}
	case KindNode, KindPOP:
		if cluster != "" && kind == KindNode {
			n.Parent = clusterID(cluster)
		} else if site != "" {
			n.Parent = siteID(site)
		}
	case KindWorkload:
		n.Parent = clusterID(cluster)
	}
	if g.inv != nil && site != "" {
		if s, ok := g.inv.Site(site); ok {
			n.Geo = &[2]float64{s.Lat, s.Lon}
		}
	}
	ns := &nodeState{n: n}
	if declared[kind] && g.inv != nil && !g.seeding {
		n.Attrs = map[string]string{"inventory": "missing"}
	}
	g.nodes[id] = ns
	delete(g.removedNodes, id)
	g.markNode(id)
	if n.Parent != "" {
		g.ensureParent(n)
		g.adopt(ns, n.Parent)
	}
	return ns
}

// adopt makes ns a child of parent; its status becomes one of the parent's inputs
// (workloads excepted: a cluster's health is its machines').
func (g *graph) adopt(ns *nodeState, parent string) {
	ns.n.Parent = parent
	set(g.children, parent, ns.n.ID)
	if ps, ok := g.nodes[parent]; ok && ns.n.Kind != KindWorkload {
		ps.in[severity[ns.n.Status]]++
		g.recompute[parent] = struct{}{}
	}
}

// isInput tells whether edge e is one of node n's status inputs.
func isInput(n *Node, e *Edge) bool {
	switch n.Kind {
	case KindNode:
		return e.Kind == KindTunnel
	case KindWorkload:
		return e.Kind == KindFlow && e.Target == n.ID
	case KindPOP:
		return e.Kind == KindProbe && e.Target == n.ID
	case KindRegion:
		return e.Kind == KindSteer && e.Source == n.ID
	}
	return false
}

// moveInput moves one input of node id from status old to status new ("" for none).
func (g *graph) moveInput(id, old, new string) {
	if ns, ok := g.nodes[id]; ok {
		g.moveInputOf(ns, old, new)
	}
}

func (g *graph) moveInputOf(ns *nodeState, old, new string) {
	if old != "" {
		ns.in[severity[old]]--
	}
	if new != "" {
		ns.in[severity[new]]++
	}
	if !g.bulk {
		g.recompute[ns.n.ID] = struct{}{}
	}
}

// edgeInput moves e's contribution at its ends.
func (g *graph) edgeInput(e *Edge, old, new string) {
	for _, end := range [2]string{e.Source, e.Target} {
		if ns, ok := g.nodes[end]; ok && isInput(ns.n, e) {
			g.moveInputOf(ns, old, new)
		}
	}
}

// ensureParent creates a missing container (an unknown cluster or site) so every element
// hangs somewhere on the map.
func (g *graph) ensureParent(n *Node) {
	if _, ok := g.nodes[n.Parent]; ok {
		return
	}
	switch {
	case strings.HasPrefix(n.Parent, "cluster:"):
		g.node(n.Parent, KindCluster, n.Site, n.Cluster, n.Cluster)
	case strings.HasPrefix(n.Parent, "site:"):
		g.node(n.Parent, KindSite, n.Site, "", n.Site)
	default:
		g.node(n.Parent, KindNode, n.Site, n.Cluster, "")
	}
}

func set(m map[string]map[string]struct{}, k, v string) {
	s := m[k]
	if s == nil {
		s = map[string]struct{}{}
		m[k] = s
	}
	s[v] = struct{}{}
}

// edge returns the edge with id, creating it between src and dst when new.
func (g *graph) edge(id, kind, src, dst string) *edgeState {
	if es, ok := g.edges[id]; ok {
		return es
	}
	e := &Edge{ID: id, Kind: kind, Source: src, Target: dst, Status: pipeline.StatusUnknown}
	for _, end := range []string{src, dst} {
		if ns, ok := g.nodes[end]; ok {
			if ns.n.Site != "" && !slices.Contains(e.Sites, ns.n.Site) {
				e.Sites = append(e.Sites, ns.n.Site)
			}
			if ns.n.Cluster != "" && !slices.Contains(e.Clusters, ns.n.Cluster) {
				e.Clusters = append(e.Clusters, ns.n.Cluster)
			}
		}
		set(g.adj, end, id)
	}
	es := &edgeState{e: e}
	g.edges[id] = es
	delete(g.removedEdges, id)
	g.markEdge(id)
	return es
}

func (g *graph) touch() {
	if g.firstDirty.IsZero() {
		g.firstDirty = g.now()
	}
}

func (g *graph) markNode(id string) {
	g.touch()
	if !g.bulk {
		g.dirtyNodes[id] = struct{}{}
		g.recompute[id] = struct{}{}
	}
}

// markEdge queues an edge for the next delta; its ends are recomputed at flush only if
// its status changed.
func (g *graph) markEdge(id string) {
	g.touch()
	if !g.bulk {
		g.dirtyEdges[id] = struct{}{}
	}
}

// Consume applies records; it is the pipeline.Consumer side of the map.
func (g *graph) Consume(recs []pipeline.Record) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for _, r := range recs {
		g.apply(r, now)
	}
}

// applyAlerts replaces the alert state of every element with the firing set.
func (g *graph) applyAlerts(firing []alerts.Alert) {
	g.mu.Lock()
	defer g.mu.Unlock()
	type mark struct {
		texts  []string
		status string
	}
	nodeMarks := map[string]*mark{}
	add := func(id string, a alerts.Alert) {
		m := nodeMarks[id]
		if m == nil {
			m = &mark{}
			nodeMarks[id] = m
		}
		text := a.Name
		if slo := a.Labels["slo"]; slo != "" && slo != a.Name {
			text += " (" + slo + ")"
		}
		text += " [" + a.Severity + "]"
		if !slices.Contains(m.texts, text) {
			m.texts = append(m.texts, text)
		}
		st := pipeline.StatusDegraded
		if a.Severity == alerts.SeverityPage {
			st = pipeline.StatusDown
		}
		m.status = worst(m.status, st)
	}
	for _, a := range firing {
		for _, id := range g.alertTargets(a.Labels) {
			add(id, a)
		}
	}
	for id, ns := range g.nodes {
		m := nodeMarks[id]
		var texts []string
		st := ""
		if m != nil {
			slices.Sort(m.texts)
			texts, st = m.texts, m.status
		}
		if st != ns.alert || !slices.Equal(texts, ns.n.Alerts) {
			ns.alert, ns.n.Alerts = st, texts
			g.markNode(id)
		}
	}
}

// alertTargets maps an alert's labels onto map nodes: pop, site, cluster and node labels
// name one element; a service label alone marks every POP serving that service.
func (g *graph) alertTargets(l map[string]string) []string {
	var ids []string
	if p := l["pop"]; p != "" {
		g.node(popID(p), KindPOP, g.popSite(p), "", p)
		ids = append(ids, popID(p))
	}
	if s := l["site"]; s != "" {
		g.node(siteID(s), KindSite, s, "", s)
		ids = append(ids, siteID(s))
	}
	if c := l["cluster"]; c != "" {
		g.node(clusterID(c), KindCluster, "", c, c)
		ids = append(ids, clusterID(c))
	}
	if n := l["node"]; n != "" {
		g.node(nodeID(n), KindNode, "", "", n)
		ids = append(ids, nodeID(n))
	}
	if svc := l["service"]; svc != "" && len(ids) == 0 && g.inv != nil {
		for _, s := range g.inv.Services {
			if s.Name == svc || strings.TrimSuffix(s.Name, ".") == strings.TrimSuffix(svc, ".") {
				for _, p := range s.POPs {
					ids = append(ids, popID(p))
				}
			}
		}
	}
	return ids
}

func (g *graph) popSite(pop string) string {
	if g.inv != nil {
		if p, ok := g.inv.POP(pop); ok {
			return p.Site
		}
	}
	return ""
}

// declared are the kinds the inventory lists; workloads and OSDs are discovered.
var declared = map[string]bool{KindSite: true, KindCluster: true, KindNode: true, KindPOP: true, KindRegion: true}

// level orders status aggregation: inputs (edges, leaves) before their containers.
var level = map[string]int{
	KindOSD: 0, KindWorkload: 1, KindPOP: 1, KindRegion: 1, KindNode: 2, KindCluster: 3, KindSite: 4,
}

// aggregate folds input counts (by severity: unknown, ok, degraded, down): no known
// input is ok if the element itself was seen lately, else unknown; every input down is
// down; any input down or degraded is degraded.
func aggregate(in [4]int, fresh bool) string {
	known := in[1] + in[2] + in[3]
	switch {
	case known == 0 && fresh:
		return pipeline.StatusOK
	case known == 0:
		return pipeline.StatusUnknown
	case in[3] == known+in[0]:
		return pipeline.StatusDown
	case in[2]+in[3] > 0:
		return pipeline.StatusDegraded
	}
	return pipeline.StatusOK
}

// nodeStatus computes a node's status from its inputs (see README "Status rules").
func (g *graph) nodeStatus(ns *nodeState, now time.Time) string {
	fresh := !ns.seen.IsZero() && now.Sub(ns.seen) <= g.rules.StaleAfter
	var st string
	if ns.n.Kind == KindOSD {
		st = ns.base
	} else {
		in := ns.in
		if ns.base != "" {
			in[severity[ns.base]]++
		}
		st = aggregate(in, fresh)
	}
	if !ns.inventory && declared[ns.n.Kind] && g.inv != nil {
		// Something the inventory should declare but does not: grey until it is added.
		st = pipeline.StatusUnknown
	}
	return worst(st, ns.alert)
}

// flush recomputes statuses and returns clones of what changed since the last flush.
func (g *graph) flush() (nodes []*Node, edges []*Edge, rmNodes, rmEdges []string, since time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.settle()
	for id := range g.dirtyNodes {
		nodes = append(nodes, g.nodes[id].n.clone())
	}
	for id := range g.dirtyEdges {
		edges = append(edges, g.edges[id].e.clone())
	}
	for id := range g.removedNodes {
		rmNodes = append(rmNodes, id)
	}
	for id := range g.removedEdges {
		rmEdges = append(rmEdges, id)
	}
	g.forget()
	since, g.firstDirty = g.firstDirty, time.Time{}
	return nodes, edges, rmNodes, rmEdges, since
}

// forget clears the record of what changed (after a flush, or when a rebuilt past graph
// is read whole). Called under g.mu.
func (g *graph) forget() {
	clear(g.dirtyNodes)
	clear(g.dirtyEdges)
	clear(g.removedNodes)
	clear(g.removedEdges)
}

// settle recomputes the statuses of what changed: edges, then their ends and containers
// level by level. The changed elements stay marked. Called under g.mu.
func (g *graph) settle() {
	now := g.now()
	if g.bulk {
		// Every element is new: each edge's status is counted at its ends once, then
		// every node is computed once.
		for id, es := range g.edges {
			g.settleEdge(id, es, now)
		}
		for id := range g.nodes {
			g.recompute[id] = struct{}{}
		}
		g.bulk = false
	}
	for id := range g.dirtyEdges {
		g.settleEdge(id, g.edges[id], now)
	}
	// Containers are recomputed level by level so that a change propagates up in one flush.
	for lvl := 0; lvl <= 4; lvl++ {
		for id := range g.recompute {
			ns, ok := g.nodes[id]
			if !ok {
				delete(g.recompute, id)
				continue
			}
			if level[ns.n.Kind] != lvl {
				continue
			}
			delete(g.recompute, id)
			if st := g.nodeStatus(ns, now); st != ns.n.Status {
				if ns.n.Parent != "" && ns.n.Kind != KindWorkload {
					g.moveInput(ns.n.Parent, ns.n.Status, st)
				}
				g.statusChanged(id, ns.n.Kind, ns.n.Status, st, now)
				ns.n.Status = st
				g.dirtyNodes[id] = struct{}{}
			}
		}
	}
	clear(g.recompute)
	g.explain()
}

func (g *graph) settleEdge(id string, es *edgeState, now time.Time) {
	st := worst(es.base, es.alert)
	switch {
	case !es.counted:
		g.edgeInput(es.e, "", st)
		es.counted = true
	case st != es.e.Status:
		g.edgeInput(es.e, es.e.Status, st)
	}
	if st != es.e.Status {
		g.statusChanged(id, es.e.Kind, es.e.Status, st, now)
	}
	es.e.Status = st
}

// age turns elements not observed within StaleAfter unknown and removes observed-only
// elements not seen within ExpireAfter.
func (g *graph) age() {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for id, es := range g.edges {
		if es.seen.IsZero() {
			continue
		}
		idle := now.Sub(es.seen)
		if idle > g.rules.ExpireAfter {
			g.removeEdge(id)
			continue
		}
		for k, s := range es.sides {
			if s.status != "" && now.Sub(s.seen) > g.rules.StaleAfter {
				es.sides[k] = tunnelSide{}
			}
		}
		if idle > g.rules.StaleAfter && es.base != pipeline.StatusUnknown {
			es.base = pipeline.StatusUnknown
			g.markEdge(id)
		}
	}
	for id, ns := range g.nodes {
		if ns.seen.IsZero() {
			continue
		}
		idle := now.Sub(ns.seen)
		if !ns.inventory && idle > g.rules.ExpireAfter && len(g.adj[id]) == 0 && len(g.children[id]) == 0 {
			g.removeNode(id)
			continue
		}
		if idle > g.rules.StaleAfter && !ns.stale {
			ns.stale = true
			if ns.base != "" {
				ns.base = pipeline.StatusUnknown
			}
			g.recompute[id] = struct{}{}
			g.touch()
		}
	}
}

func (g *graph) removeEdge(id string) {
	es := g.edges[id]
	g.forgetCauses(id)
	delete(g.edges, id)
	delete(g.dirtyEdges, id)
	g.removedEdges[id] = struct{}{}
	g.touch()
	if es.counted {
		g.edgeInput(es.e, es.e.Status, "")
	}
	for _, end := range []string{es.e.Source, es.e.Target} {
		delete(g.adj[end], id)
		if len(g.adj[end]) == 0 {
			delete(g.adj, end)
		}
	}
}

func (g *graph) removeNode(id string) {
	ns := g.nodes[id]
	g.forgetCauses(id)
	delete(g.nodes, id)
	delete(g.dirtyNodes, id)
	delete(g.children, id)
	g.removedNodes[id] = struct{}{}
	g.touch()
	if p := ns.n.Parent; p != "" {
		delete(g.children[p], id)
		if ns.n.Kind != KindWorkload {
			g.moveInput(p, ns.n.Status, "")
		}
	}
}

// counts returns the number of nodes and edges (for metrics).
func (g *graph) counts() (int, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.nodes), len(g.edges)
}

func (g *graph) unmappedTotal() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, v := range g.unmapped {
		n += v
	}
	return n
}
