package topomap

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/pipeline"
)

// Cause is an element beneath a degraded or down one that is bad too, and so a probable
// cause of it (see README "Causes").
type Cause struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Status   string `json:"status"`
	Since    int64  `json:"since,omitempty"` // unix ms: bad since, as far as the map saw
	Evidence string `json:"evidence"`        // the record that shows it
}

// causeRTT is steering's cause for a weight shaped by RTT alone (steering.CauseRTT).
const causeRTT = "rtt"

// maxCauses bounds the causes named per element: the first few are the useful ones.
const maxCauses = 5

// effectKinds are the elements whose causes are looked for beneath them.
var effectKinds = map[string]bool{KindFlow: true, KindWorkload: true, KindPOP: true, KindRegion: true}

// causeKinds are the elements whose status changes can change an effect's causes.
var causeKinds = map[string]bool{KindTunnel: true, KindProbe: true, KindSteer: true, KindOSD: true, KindNode: true}

func bad(status string) bool {
	return status == pipeline.StatusDown || status == pipeline.StatusDegraded
}

// statusChanged keeps the causes' bookkeeping when an element's status changes: when it
// went bad, whether it is an effect to explain, and whether effects need a new look.
// Called under g.mu.
func (g *graph) statusChanged(id, kind, old, new string, now time.Time) {
	if new != old {
		g.since[id] = now
	}
	if effectKinds[kind] {
		if bad(new) {
			g.effects[id] = struct{}{}
		} else if _, ok := g.effects[id]; ok {
			delete(g.effects, id)
			g.setCauses(id, nil)
		}
		g.causesStale = true
	}
	if causeKinds[kind] {
		g.causesStale = true
	}
}

// forgetCauses drops a removed element from the bookkeeping; effects beneath which it
// was a cause get a new look.
func (g *graph) forgetCauses(id string) {
	delete(g.since, id)
	delete(g.effects, id)
	g.causesStale = true
}

// explain names the causes of every degraded or down effect. It runs only after a status
// that matters changed, and costs the bad effects' neighbourhoods, not the graph.
// Called under g.mu.
func (g *graph) explain() {
	if !g.causesStale {
		return
	}
	g.causesStale = false
	for id := range g.effects {
		g.setCauses(id, g.causesOf(id))
	}
}

func (g *graph) setCauses(id string, cs []Cause) {
	if ns, ok := g.nodes[id]; ok {
		if !slices.Equal(ns.n.Causes, cs) {
			ns.n.Causes = cs
			g.dirtyNodes[id] = struct{}{}
		}
		return
	}
	if es, ok := g.edges[id]; ok && !slices.Equal(es.e.Causes, cs) {
		es.e.Causes = cs
		g.dirtyEdges[id] = struct{}{}
	}
}

// candidate is a bad element beneath an effect; specific ones (a tunnel between the two
// ends' sites, a probe to the POP) rank before merely nearby ones.
type candidate struct {
	id       string
	specific bool
}

type candidates []candidate

func (cs *candidates) add(id string, specific bool) {
	for i, c := range *cs {
		if c.id == id {
			(*cs)[i].specific = c.specific || specific
			return
		}
	}
	*cs = append(*cs, candidate{id, specific})
}

// causesOf ranks the bad elements beneath effect id (see rank).
func (g *graph) causesOf(id string) []Cause {
	var cands candidates
	if es, ok := g.edges[id]; ok {
		if es.e.Kind != KindFlow {
			return nil
		}
		// A flow's packets cross the tunnels of its clusters' machines. Between two
		// sites (a flow to another cluster of the mesh), the tunnels between those
		// sites carry it; inside one, a tunnel to another site carries the cross-site
		// part.
		src, dst := g.nodes[es.e.Source], g.nodes[es.e.Target]
		var between [2]string
		if src != nil && dst != nil && src.n.Site != "" && dst.n.Site != "" && src.n.Site != dst.n.Site {
			between = [2]string{src.n.Site, dst.n.Site}
		}
		for _, w := range []*nodeState{src, dst} {
			if w == nil {
				continue
			}
			for _, tid := range g.clusterTunnels(w.n.Cluster) {
				t := g.edges[tid].e
				a, b := g.nodes[t.Source], g.nodes[t.Target]
				specific := a != nil && b != nil && a.n.Site != b.n.Site
				if specific && between[0] != "" {
					specific = [2]string{a.n.Site, b.n.Site} == between || [2]string{b.n.Site, a.n.Site} == between
				}
				cands.add(tid, specific)
			}
		}
	} else if ns, ok := g.nodes[id]; ok {
		n := ns.n
		switch n.Kind {
		case KindWorkload:
			// Its pods run on its cluster's machines (their tunnels) and write to the Ceph
			// OSDs of its cluster or, for a compute cluster, of its site's storage cluster.
			for _, tid := range g.clusterTunnels(n.Cluster) {
				cands.add(tid, false)
			}
			for _, oid := range g.osdsServing(n.Cluster, n.Site) {
				cands.add(oid, true)
			}
		case KindPOP:
			// The front door is the POP site's machines; then their tunnels; the probes
			// that failed to reach it are the evidence it is unreachable.
			for _, nid := range g.siteNodes(n.Site) {
				if bad(g.nodes[nid].n.Status) {
					cands.add(nid, true)
				}
				for eid := range g.adj[nid] {
					if g.edges[eid].e.Kind == KindTunnel && bad(g.edges[eid].e.Status) {
						cands.add(eid, false)
					}
				}
			}
			for eid := range g.adj[id] {
				if e := g.edges[eid].e; e.Kind == KindProbe && e.Target == id && bad(e.Status) {
					cands.add(eid, true)
				}
			}
		case KindRegion:
			// A region is steered away from the POPs it was drained of. An arrow steering
			// shaped by RTT alone (the region's nearer POP preferred) is no failure.
			for eid := range g.adj[id] {
				if e := g.edges[eid].e; e.Kind == KindSteer && e.Source == id && bad(e.Status) && e.Attrs["cause"] != causeRTT {
					cands.add(eid, true)
				}
			}
		}
	}
	return g.rank(cands)
}

// tunnelCauses ranks what explains a tunnel alert between two sites: the bad tunnels
// between their machines, then the bad machines at their ends (first only when worse
// than every tunnel: a machine down while its tunnels read degraded).
func (g *graph) tunnelCauses(site, peer string) []Cause {
	var cands candidates
	for _, pair := range [][2]string{{site, peer}, {peer, site}} {
		for _, nid := range g.siteNodes(pair[0]) {
			for eid := range g.adj[nid] {
				e := g.edges[eid].e
				other := g.nodes[e.Source]
				if e.Source == nid {
					other = g.nodes[e.Target]
				}
				if e.Kind != KindTunnel || !bad(e.Status) || other == nil || other.n.Site != pair[1] {
					continue
				}
				cands.add(eid, true)
				cands.add(nid, false)
				cands.add(other.n.ID, false)
			}
		}
	}
	return g.rank(cands)
}

// cephCauses ranks what explains a Ceph alert on a cluster: its bad OSDs (the one the
// alert names, if any, first; then the slowest), then its bad machines and their bad
// tunnels (a monitor out of quorum is a machine or its network).
func (g *graph) cephCauses(cluster, osd string) []Cause {
	var cands candidates
	for nid := range g.children[clusterID(cluster)] {
		n := g.nodes[nid]
		if n == nil || n.n.Kind != KindNode {
			continue
		}
		for oid := range g.children[nid] {
			if o := g.nodes[oid]; o != nil && o.n.Kind == KindOSD && bad(o.n.Status) {
				cands.add(oid, osd != "" && strings.HasSuffix(oid, "."+osd))
			}
		}
		if bad(n.n.Status) {
			cands.add(nid, false)
		}
	}
	for _, tid := range g.clusterTunnels(cluster) {
		cands.add(tid, false)
	}
	return g.rank(cands)
}

// rank orders the bad candidates: worst status first, then the specific before the
// nearby, then the slowest OSD, then the one that went bad first (the root is older than
// what it breaks). At most maxCauses; nil when none is bad.
func (g *graph) rank(cands candidates) []Cause {
	out := make([]Cause, 0, len(cands))
	specific := map[string]bool{}
	for _, c := range cands {
		if cs, ok := g.cause(c.id); ok {
			out = append(out, cs)
			specific[c.id] = c.specific
		}
	}
	slowness := func(c Cause) float64 {
		if ns, ok := g.nodes[c.ID]; ok && ns.n.Kind == KindOSD {
			m := ns.n.Metrics
			return max(m["commit_latency_ms"], m["apply_latency_ms"], m["read_latency_ms"], m["write_latency_ms"])
		}
		return 0
	}
	slices.SortFunc(out, func(a, b Cause) int {
		return cmp.Or(
			-cmp.Compare(severity[a.Status], severity[b.Status]),
			-cmp.Compare(b2i(specific[a.ID]), b2i(specific[b.ID])),
			-cmp.Compare(slowness(a), slowness(b)),
			cmp.Compare(a.Since, b.Since),
			cmp.Compare(a.ID, b.ID))
	})
	if len(out) > maxCauses {
		out = out[:maxCauses]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// cause describes element id as a cause when it is bad, with the record that shows it.
func (g *graph) cause(id string) (Cause, bool) {
	var c Cause
	var updated int64
	if es, ok := g.edges[id]; ok {
		e := es.e
		c = Cause{ID: id, Kind: e.Kind, Status: e.Status}
		updated = e.Updated
		switch e.Kind {
		case KindTunnel:
			c.Evidence = fmt.Sprintf("tunnel_stats: WireGuard %s ↔ %s reported %s", g.label(e.Source), g.label(e.Target), e.Status)
		case KindProbe:
			c.Evidence = fmt.Sprintf("probes: %s %s → %s failed or slow (RTT %.0f ms) %s", e.Attrs["vantage"], e.Attrs["method"], g.label(e.Target), e.Metrics["rtt_ms"], e.Attrs["error"])
		case KindSteer:
			c.Evidence = fmt.Sprintf("steering_decisions: %s weight %g (%s: %s)", g.label(e.Target), e.Metrics["weight"], e.Attrs["cause"], e.Attrs["reason"])
		default:
			c.Evidence = e.Kind + " " + e.Status
		}
	} else if ns, ok := g.nodes[id]; ok {
		n := ns.n
		c = Cause{ID: id, Kind: n.Kind, Status: n.Status}
		updated = n.Updated
		switch n.Kind {
		case KindOSD:
			m := n.Metrics
			c.Evidence = fmt.Sprintf("osd_stats: %s on %s up=%s in=%s, commit %g ms, apply %g ms, read %g ms, write %g ms",
				n.Label, n.Attrs["host"], n.Attrs["up"], n.Attrs["in"], m["commit_latency_ms"], m["apply_latency_ms"], m["read_latency_ms"], m["write_latency_ms"])
		default:
			c.Evidence = fmt.Sprintf("%s %s: %s (its tunnels and OSDs)", n.Kind, n.Label, n.Status)
		}
	} else {
		return Cause{}, false
	}
	if !bad(c.Status) {
		return Cause{}, false
	}
	if s, ok := g.since[id]; ok {
		c.Since = s.UnixMilli()
	}
	if updated > 0 {
		c.Evidence += " at " + time.UnixMilli(updated).UTC().Format("15:04:05")
	}
	return c, true
}

func (g *graph) label(id string) string {
	if ns, ok := g.nodes[id]; ok {
		return ns.n.Label
	}
	return id
}

// clusterTunnels lists the bad tunnels touching the machines of cluster.
func (g *graph) clusterTunnels(cluster string) []string {
	var out []string
	for nid := range g.children[clusterID(cluster)] {
		if g.nodes[nid] == nil || g.nodes[nid].n.Kind != KindNode {
			continue
		}
		for eid := range g.adj[nid] {
			if e := g.edges[eid].e; e.Kind == KindTunnel && bad(e.Status) {
				out = append(out, eid)
			}
		}
	}
	return out
}

// osdsServing lists the bad OSDs of cluster, or of the clusters at site when cluster has
// none (a compute cluster writes to its site's storage cluster).
func (g *graph) osdsServing(cluster, site string) []string {
	osds := func(cluster string) (all, badOnes []string) {
		for nid := range g.children[clusterID(cluster)] {
			for oid := range g.children[nid] {
				if o := g.nodes[oid]; o != nil && o.n.Kind == KindOSD {
					all = append(all, oid)
					if bad(o.n.Status) {
						badOnes = append(badOnes, oid)
					}
				}
			}
		}
		return all, badOnes
	}
	if all, badOnes := osds(cluster); len(all) > 0 {
		return badOnes
	}
	var out []string
	for cid := range g.children[siteID(site)] {
		if c := g.nodes[cid]; c != nil && c.n.Kind == KindCluster && c.n.Cluster != cluster {
			_, b := osds(c.n.Cluster)
			out = append(out, b...)
		}
	}
	return out
}

// siteNodes lists the machines at site: in its clusters, or directly under it.
func (g *graph) siteNodes(site string) []string {
	var out []string
	for cid := range g.children[siteID(site)] {
		c := g.nodes[cid]
		if c == nil {
			continue
		}
		switch c.n.Kind {
		case KindNode:
			out = append(out, cid)
		case KindCluster:
			for nid := range g.children[cid] {
				if n := g.nodes[nid]; n != nil && n.n.Kind == KindNode {
					out = append(out, nid)
				}
			}
		}
	}
	return out
}

var _ alerts.Explainer = (*Map)(nil)

// Cause is the top cause beneath the element an alert's labels name (alerts.Explainer),
// as "<id> (<status> since <time>): <evidence>": a POP (label pop), a workload (cluster,
// namespace and service, the service SLI's labels), a client region (client_region), the
// tunnels between two sites (site and peer_site, the tunnel SLI's) or a Ceph cluster
// (cluster, with osd when the alert names one). It is looked for now, so a notification
// sent before the map's next alert poll carries it too; "" when the map knows no bad
// element beneath (README "Causes" lists the alerts that name none).
func (m *Map) Cause(l map[string]string) string {
	g := m.graph
	g.mu.Lock()
	defer g.mu.Unlock()
	var ids []string
	if p := l["pop"]; p != "" {
		ids = append(ids, popID(p))
	}
	if c, ns, svc := l["cluster"], l["namespace"], l["service"]; c != "" && ns != "" && svc != "" {
		ids = append(ids, workloadID(c, ns, svc))
	}
	if r := l["client_region"]; r != "" {
		ids = append(ids, regionID(r))
	}
	var cs []Cause
	for _, id := range ids {
		if _, ok := g.nodes[id]; ok && len(cs) == 0 {
			cs = g.causesOf(id)
		}
	}
	switch site, peer, cluster := l["site"], l["peer_site"], l["cluster"]; {
	case len(cs) > 0 || len(ids) > 0:
	case site != "" && peer != "":
		cs = g.tunnelCauses(site, peer)
	case cluster != "":
		cs = g.cephCauses(cluster, l["osd"])
	}
	if len(cs) == 0 {
		return ""
	}
	c := cs[0]
	since := ""
	if c.Since > 0 {
		since = " since " + time.UnixMilli(c.Since).UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%s (%s%s): %s", c.ID, c.Status, since, c.Evidence)
}
