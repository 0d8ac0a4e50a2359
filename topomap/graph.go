// Package topomap owns the live topology graph (sites, clusters, nodes, OSDs, workloads,
// POPs and client regions joined by tunnels, flows, storage links, probes and steering),
// streams it to browsers over a websocket, and serves the web map that draws it.
package topomap

import (
	"maps"
	"slices"

	"github.com/meridianhq/meridian/pipeline"
)

// Node kinds.
const (
	KindRegion   = "region" // client region (steering source)
	KindSite     = "site"
	KindCluster  = "cluster"
	KindNode     = "node"
	KindOSD      = "osd"
	KindWorkload = "workload"
	KindPOP      = "pop"
)

// Edge kinds.
const (
	KindTunnel  = "tunnel"  // WireGuard, node to node
	KindFlow    = "flow"    // Hubble, workload to workload
	KindStorage = "storage" // host node to Ceph OSD
	KindProbe   = "probe"   // vantage to POP round trip
	KindSteer   = "steer"   // client region to POP weight
)

// Layers groups kinds for client filters; a kind name is also a layer of its own.
var Layers = map[string][]string{
	"world":    {KindRegion, KindSite, KindCluster, KindNode, KindPOP, KindTunnel, KindProbe, KindSteer},
	"services": {KindCluster, KindWorkload, KindFlow},
	"storage":  {KindSite, KindCluster, KindNode, KindOSD, KindStorage},
}

// Node is one vertex of the map as clients see it. Published values are never mutated.
type Node struct {
	ID      string             `json:"id"`
	Kind    string             `json:"kind"`
	Label   string             `json:"label"`
	Status  string             `json:"status"`
	Site    string             `json:"site,omitempty"`
	Cluster string             `json:"cluster,omitempty"`
	Parent  string             `json:"parent,omitempty"` // containing element's id
	Geo     *[2]float64        `json:"geo,omitempty"`    // [lat, lon] where known
	Metrics map[string]float64 `json:"metrics,omitempty"`
	Attrs   map[string]string  `json:"attrs,omitempty"`
	Alerts  []string           `json:"alerts,omitempty"`
	Causes  []Cause            `json:"causes,omitempty"`  // degraded or down: what beneath it is bad too
	Updated int64              `json:"updated,omitempty"` // last observation, unix ms
}

// Edge is one link of the map. Sites and Clusters hold both ends' identities for the
// server's filters; clients get them from the end nodes.
type Edge struct {
	ID       string             `json:"id"`
	Kind     string             `json:"kind"`
	Source   string             `json:"source"`
	Target   string             `json:"target"`
	Status   string             `json:"status"`
	Sites    []string           `json:"-"`
	Clusters []string           `json:"-"`
	Metrics  map[string]float64 `json:"metrics,omitempty"`
	Attrs    map[string]string  `json:"attrs,omitempty"`
	Alerts   []string           `json:"alerts,omitempty"`
	Causes   []Cause            `json:"causes,omitempty"`
	Updated  int64              `json:"updated,omitempty"`
}

func (n *Node) clone() *Node {
	c := *n
	c.Metrics = maps.Clone(n.Metrics)
	c.Attrs = maps.Clone(n.Attrs)
	c.Alerts = slices.Clone(n.Alerts)
	c.Causes = slices.Clone(n.Causes)
	if n.Geo != nil {
		g := *n.Geo
		c.Geo = &g
	}
	return &c
}

func (e *Edge) clone() *Edge {
	c := *e
	c.Sites = slices.Clone(e.Sites)
	c.Clusters = slices.Clone(e.Clusters)
	c.Metrics = maps.Clone(e.Metrics)
	c.Attrs = maps.Clone(e.Attrs)
	c.Alerts = slices.Clone(e.Alerts)
	c.Causes = slices.Clone(e.Causes)
	return &c
}

var severity = map[string]int{
	pipeline.StatusOK:       1,
	pipeline.StatusUnknown:  0,
	pipeline.StatusDegraded: 2,
	pipeline.StatusDown:     3,
}

// worst returns the more severe status: down > degraded > ok > unknown.
func worst(a, b string) string {
	if severity[b] > severity[a] {
		return b
	}
	return a
}
