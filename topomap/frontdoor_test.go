package topomap

import (
	"testing"

	"github.com/meridianhq/meridian/pipeline"
)

// The POP diamond carries its front door: utilisation summed over the pair's frontends
// against the inventory's capacity, the VIP holder and each node's VRRP state; a
// failover moves the holder at once, and two MASTERs both show as holders.
func TestPOPShowsFrontDoor(t *testing.T) {
	g, _ := newTestGraph()
	g.inv.POPs[0].Capacity.SessionsPerSecond = 1000
	fe := func(node string, rate float64) *pipeline.HAProxyStat {
		return &pipeline.HAProxyStat{M: pipeline.Meta{Site: "london", Node: node}, POP: "lon", Proxy: "api", Type: "frontend", SessionRate: rate, Utilisation: rate / 1000}
	}
	state := func(node, st string) *pipeline.VRRPState {
		return &pipeline.VRRPState{M: pipeline.Meta{Site: "london", Node: node}, POP: "lon", Instance: "VI_lon", State: st}
	}
	pop := func() (map[string]float64, map[string]string) {
		g.flush()
		g.mu.Lock()
		defer g.mu.Unlock()
		n := g.nodes["pop:lon"].n
		return n.Metrics, n.Attrs
	}
	g.Consume([]pipeline.Record{fe("lon-fd-1", 600), fe("lon-fd-2", 50), state("lon-fd-1", "MASTER"), state("lon-fd-2", "BACKUP"),
		&pipeline.HAProxyStat{M: pipeline.Meta{Node: "lon-fd-1"}, POP: "lon", Proxy: "pop", Type: "backend", SessionRate: 999}})
	m, a := pop()
	if m["utilisation"] != 0.65 || m["session_rate"] != 650 || m["capacity_session_rate"] != 1000 {
		t.Errorf("metrics %v, want utilisation 0.65 of 1000/s (backends not counted)", m)
	}
	if a["vip_holder"] != "lon-fd-1" || a["vrrp"] != "lon-fd-1 MASTER, lon-fd-2 BACKUP" {
		t.Errorf("attrs %v", a)
	}
	g.Consume([]pipeline.Record{
		&pipeline.VRRPTransition{M: pipeline.Meta{Node: "lon-fd-1"}, POP: "lon", Instance: "VI_lon", From: "MASTER", To: "STOP"},
		&pipeline.VRRPTransition{M: pipeline.Meta{Node: "lon-fd-2"}, POP: "lon", Instance: "VI_lon", From: "BACKUP", To: "MASTER", Failover: true},
	})
	if _, a = pop(); a["vip_holder"] != "lon-fd-2" {
		t.Errorf("after the failover: holder %q, want lon-fd-2", a["vip_holder"])
	}
	g.Consume([]pipeline.Record{state("lon-fd-1", "MASTER")})
	if _, a = pop(); a["vip_holder"] != "lon-fd-1,lon-fd-2" {
		t.Errorf("split brain: holder %q, want both", a["vip_holder"])
	}
}
