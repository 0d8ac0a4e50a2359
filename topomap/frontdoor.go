package topomap

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// frontDoor is what the map knows of one POP's HAProxy and Keepalived pair.
type frontDoor struct {
	load map[string]frontendLoad // "node/frontend" -> its latest reading
	vrrp map[string]string       // "node/instance" -> VRRP state
}

type frontendLoad struct{ utilisation, sessionRate, bytesOut float64 }

func (g *graph) frontDoor(pop string) *frontDoor {
	if g.frontDoors == nil {
		g.frontDoors = map[string]*frontDoor{}
	}
	fd := g.frontDoors[pop]
	if fd == nil {
		fd = &frontDoor{load: map[string]frontendLoad{}, vrrp: map[string]string{}}
		g.frontDoors[pop] = fd
	}
	return fd
}

// applyHAProxy sums the POP's frontends over its nodes into the diamond's utilisation
// (against the capacity the inventory gives it), session rate and bytes out.
func (g *graph) applyHAProxy(r *pipeline.HAProxyStat, now time.Time) {
	if r.Type != "frontend" {
		return
	}
	if r.POP == "" {
		g.unmapped["haproxy_stat"]++
		return
	}
	fd := g.frontDoor(r.POP)
	fd.load[r.M.Node+"/"+r.Proxy] = frontendLoad{r.Utilisation, r.SessionRate, r.BytesOut}
	var sum frontendLoad
	for _, l := range fd.load {
		sum.utilisation += l.utilisation
		sum.sessionRate += l.sessionRate
		sum.bytesOut += l.bytesOut
	}
	pop := g.node(popID(r.POP), KindPOP, g.popSite(r.POP), "", r.POP)
	m := metricMap(&pop.n.Metrics)
	m["utilisation"], m["session_rate"], m["bytes_out_per_s"] = sum.utilisation, sum.sessionRate, sum.bytesOut
	if g.inv != nil {
		if p, ok := g.inv.POP(r.POP); ok {
			m["capacity_session_rate"], m["capacity_bandwidth"] = p.Capacity.SessionsPerSecond, p.Capacity.Bandwidth
		}
	}
	g.markNode(pop.n.ID)
	g.observeNode(pop, now, r.M.Time)
}

// applyVRRP shows on the diamond which nodes hold the POP's VIP (more than one: a split
// brain) and every node's VRRP state.
func (g *graph) applyVRRP(pop, node, instance, state string, at, now time.Time) {
	if pop == "" {
		g.unmapped["vrrp"]++
		return
	}
	fd := g.frontDoor(pop)
	key := node + "/" + instance
	if fd.vrrp[key] == state {
		return
	}
	fd.vrrp[key] = state
	var holders, states []string
	for _, k := range slices.Sorted(maps.Keys(fd.vrrp)) {
		n, _, _ := strings.Cut(k, "/")
		if fd.vrrp[k] == pipeline.VRRPMaster {
			holders = append(holders, n)
		}
		states = append(states, n+" "+fd.vrrp[k])
	}
	pn := g.node(popID(pop), KindPOP, g.popSite(pop), "", pop)
	a := attrMap(&pn.n.Attrs)
	a["vip_holder"], a["vrrp"] = strings.Join(holders, ","), strings.Join(states, ", ")
	g.markNode(pn.n.ID)
	g.observeNode(pn, now, at)
}
