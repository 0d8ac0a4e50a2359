package topomap

import (
	"strings"

	"github.com/meridianhq/meridian/inventory"
)

// ApplyInventory makes inv the map's world, as the live inventory changes:
//   - new sites, clusters, nodes, POPs and regions appear (unknown until observed);
//   - an entry gone from inv is no longer declared: it expires like anything unobserved;
//   - a node that moved to another site or cluster is placed again under its new parent;
//   - the placeholder of an unknown WireGuard peer ("unknown peer …") whose key inv now
//     owns is removed with its tunnels: the collectors read their sources again within
//     scrape.RemapGap of the change and draw the tunnel to the node.
func (m *Map) ApplyInventory(inv *inventory.Inventory) {
	g := m.graph
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inv = inv
	declared := map[string]bool{}
	for _, s := range inv.Sites {
		declared[siteID(s.Name)] = true
	}
	for _, c := range inv.Clusters {
		declared[clusterID(c.Name)] = true
	}
	keys := map[string]bool{}
	for _, n := range inv.Nodes {
		id := nodeID(n.Name)
		declared[id] = true
		if n.WireGuardKey != "" {
			keys[n.WireGuardKey] = true
		}
		if ns, ok := g.nodes[id]; ok && ns.inventory && (ns.n.Site != n.Site || ns.n.Cluster != n.Cluster) {
			g.removeNode(id) // seed below adds it again under its new parent; its edges keep its id
		}
	}
	for _, p := range inv.POPs {
		declared[popID(p.Name)] = true
	}
	for _, r := range inv.ClientRegions {
		declared[regionID(r.Name)] = true
	}
	declared[regionID(defaultRegion)] = true
	for id, ns := range g.nodes {
		if ns.inventory && !declared[id] {
			ns.inventory = false
		}
		if strings.HasPrefix(id, nodeID("?")) && ns.n.Attrs != nil && keys[ns.n.Attrs["public_key"]] {
			for e := range g.adj[id] {
				g.removeEdge(e)
			}
			g.removeNode(id)
		}
	}
	g.seed()
}

// inventory is the world the graph shows now.
func (g *graph) inventory() *inventory.Inventory {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inv
}
