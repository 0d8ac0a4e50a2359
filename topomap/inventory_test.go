package topomap

import (
	"testing"

	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// TestApplyInventory: the map follows a changed inventory without a restart — a node
// added appears, one moved is placed under its new cluster, one removed is no longer
// declared, and a tunnel drawn to an unknown peer before its node was known is drawn
// to the node once the inventory knows the key and the collector reports again.
func TestApplyInventory(t *testing.T) {
	m := &Map{}
	var clk *fakeClock
	m.graph, clk = newTestGraph()
	const lateKey = "bGF0ZS1rZXk="
	tunnel := func(peer string) *pipeline.TunnelStat {
		return &pipeline.TunnelStat{M: pipeline.Meta{Time: clk.t, Node: "nyc-1", Site: "nyc", Cluster: "destroyer"},
			PublicKey: lateKey, PeerNode: peer, Status: pipeline.StatusOK}
	}
	m.graph.Consume([]pipeline.Record{tunnel("")})
	const placeholder = "node:?bGF0ZS1r"
	if m.graph.status(placeholder) == "" {
		t.Fatal("no placeholder for the unknown peer")
	}

	inv := labInventory()
	inv.Nodes = append(inv.Nodes, inventory.Node{Name: "par-2", Site: "paris", Cluster: "edge-par", WireGuardKey: lateKey})
	inv.Nodes[4] = inventory.Node{Name: "lon-1", Site: "paris", Cluster: "edge-par"} // moved
	inv.Nodes = append(inv.Nodes[:5:5], inv.Nodes[6:]...)                            // par-1 removed
	m.ApplyInventory(inv)
	m.graph.Consume([]pipeline.Record{tunnel("par-2")})
	m.graph.flush()

	g := m.graph
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"new node declared", g.nodes["node:par-2"] != nil && g.nodes["node:par-2"].inventory},
		{"moved node under its new cluster", g.nodes["node:lon-1"] != nil && g.nodes["node:lon-1"].n.Parent == "cluster:edge-par"},
		{"removed node no longer declared", g.nodes["node:par-1"] == nil || !g.nodes["node:par-1"].inventory},
		{"placeholder gone", g.nodes[placeholder] == nil},
		{"tunnel drawn to the node", g.edges["tunnel:node:nyc-1|node:par-2"] != nil},
		{"no tunnel left to the placeholder", len(g.adj[placeholder]) == 0},
	} {
		if !tc.ok {
			t.Errorf("%s: no", tc.name)
		}
	}
}
