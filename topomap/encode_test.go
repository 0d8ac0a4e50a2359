package topomap

import (
	"encoding/json"
	"math"
	"runtime"
	"slices"
	"testing"
	"time"
)

// TestEncodingEqualsReflection: Node and Edge encode byte for byte as encoding/json
// encodes them by reflection, over the lab's graph and elements with every field set,
// strings that need escaping and floats in every notation; NaN is an error in both.
func TestEncodingEqualsReflection(t *testing.T) {
	type plainNode Node // the same fields and tags, without the method
	type plainEdge Edge
	g := testGraph(append(calmLab(t, time.Now()), erroring(t, time.Now())...))
	nodes, edges := (&pastGraph{g: g}).elements(nil)
	geo := [2]float64{51.5, -0.125}
	nodes = append(nodes, &Node{ID: `pop:"<lon>"&`, Kind: "pop", Label: "Zürich\u2028\t\x01", Status: "ok", Site: "s", Cluster: "c", Parent: "p", Geo: &geo,
		Metrics: map[string]float64{"a": 1e-7, "b": 1e21, "c": -2.5e-9, "d": 123456789.125, "e": 0, "f": -0.0, "g": 1e20},
		Attrs:   map[string]string{"z": "é", "y": "\xff"}, Alerts: []string{"A [page]", "B"},
		Causes: []Cause{{ID: "tunnel:x|y", Kind: "tunnel", Status: "down", Since: 5, Evidence: "tunnel_stats: <x>"}}, Updated: 1764000000000})
	edges = append(edges, &Edge{ID: "e", Kind: "flow", Source: "a", Target: "b", Status: "down", Sites: []string{"x"}, Metrics: map[string]float64{"p99_ms": 0.001}})
	for _, n := range nodes {
		got, err1 := json.Marshal(n)
		want, err2 := json.Marshal((*plainNode)(n))
		if err1 != nil || err2 != nil || string(got) != string(want) {
			t.Errorf("node %s:\n got %s (%v)\nwant %s (%v)", n.ID, got, err1, want, err2)
		}
	}
	for _, e := range edges {
		got, err1 := json.Marshal(e)
		want, err2 := json.Marshal((*plainEdge)(e))
		if err1 != nil || err2 != nil || string(got) != string(want) {
			t.Errorf("edge %s:\n got %s (%v)\nwant %s (%v)", e.ID, got, err1, want, err2)
		}
	}
	// A whole snapshot, live and past, and one big enough to be encoded in parallel chunks
	// (on 4 cores, whatever this machine has).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	many := slices.Repeat(edges, parallelFrom/len(edges)+1)
	for _, m := range []snapshotMsg{
		{Type: "snapshot", Epoch: "9f2c", Seq: 7, Nodes: nodes, Edges: edges},
		{Type: "snapshot", Seq: 8, Nodes: nodes, Edges: many},
		{Type: "snapshot", Seq: 1, At: 1764000000000, Speed: 60, Nodes: nodes[:0], Edges: nil},
	} {
		type plainMsg struct {
			Type  string       `json:"type"`
			Epoch string       `json:"epoch"`
			Seq   uint64       `json:"seq"`
			At    int64        `json:"at,omitempty"`
			Speed float64      `json:"speed,omitempty"`
			Nodes []*plainNode `json:"nodes"`
			Edges []*plainEdge `json:"edges"`
		}
		pm := plainMsg{Type: m.Type, Epoch: m.Epoch, Seq: m.Seq, At: m.At, Speed: m.Speed}
		if m.Nodes != nil {
			pm.Nodes = []*plainNode{}
		}
		for _, n := range m.Nodes {
			pm.Nodes = append(pm.Nodes, (*plainNode)(n))
		}
		for _, e := range m.Edges {
			pm.Edges = append(pm.Edges, (*plainEdge)(e))
		}
		got, err1 := m.encode()
		want, err2 := json.Marshal(pm)
		if err1 != nil || err2 != nil || string(got) != string(want) {
			t.Errorf("snapshot (%d nodes): encode differs from encoding/json (%v, %v):\n got %.300s\nwant %.300s", len(m.Nodes), err1, err2, got, want)
		}
	}
	if len(nodes) < 20 || len(edges) < 20 {
		t.Errorf("only %d nodes, %d edges compared", len(nodes), len(edges))
	}
	if _, err := json.Marshal(&Edge{Metrics: map[string]float64{"x": math.NaN()}}); err == nil {
		t.Error("NaN encoded without an error")
	}
}
