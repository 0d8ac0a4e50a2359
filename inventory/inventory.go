// Package inventory is the declared world Meridian watches: regions, sites, clusters,
// nodes, POPs, services and client regions. It is loaded from the config file's
// `inventory:` section and is read-only at run time; every record is mapped onto it.
package inventory

import (
	"fmt"
	"net/netip"
)

// Inventory is the whole declared world.
type Inventory struct {
	Sites         []Site         `yaml:"sites"`
	Clusters      []Cluster      `yaml:"clusters"`
	Nodes         []Node         `yaml:"nodes"`
	POPs          []POP          `yaml:"pops"`
	Services      []Service      `yaml:"services"`
	ClientRegions []ClientRegion `yaml:"client_regions"`
}

// Site is a physical location.
type Site struct {
	Name   string  `yaml:"name"`
	Region string  `yaml:"region"` // e.g. asia, north-america, europe
	Role   string  `yaml:"role"`   // brain, muscle, vault, edge
	City   string  `yaml:"city"`
	Lat    float64 `yaml:"lat"`
	Lon    float64 `yaml:"lon"`
}

// Cluster is a Kubernetes cluster at a site.
type Cluster struct {
	Name string `yaml:"name"`
	Site string `yaml:"site"`
}

// Node is a machine in the WireGuard mesh.
type Node struct {
	Name         string `yaml:"name"`
	Site         string `yaml:"site"`
	Cluster      string `yaml:"cluster"`
	WireGuardKey string `yaml:"wireguard_key"` // base64 public key
	CephHost     string `yaml:"ceph_host"`     // Ceph's name for this host, when it runs OSDs
}

// POP is a point of presence answering for services behind a VIP.
type POP struct {
	Name       string       `yaml:"name"`
	Site       string       `yaml:"site"`
	VIPs       []netip.Addr `yaml:"vips"`        // A and AAAA answers
	HealthURL  string       `yaml:"health_url"`  // HTTP(S) probe target
	TCPAddr    string       `yaml:"tcp_addr"`    // host:port for TCP connect probes
	BaseWeight float64      `yaml:"base_weight"` // default 1
}

// Service is a DNS name served by a pool of POPs.
type Service struct {
	Name string   `yaml:"name"` // FQDN, e.g. api.example.net.
	POPs []string `yaml:"pops"`
}

// ClientRegion groups clients by location; residency limits which POPs may serve them.
type ClientRegion struct {
	Name         string         `yaml:"name"`
	Countries    []string       `yaml:"countries"`  // ISO 3166-1 alpha-2
	Continents   []string       `yaml:"continents"` // ISO continent codes: EU, NA, AS, ...
	CIDRs        []netip.Prefix `yaml:"cidrs"`      // override GeoIP
	SamplePrefix netip.Prefix   `yaml:"sample_prefix"`
	AllowedPOPs  []string       `yaml:"allowed_pops"` // empty: any POP (no residency rule)
	Preferred    []string       `yaml:"preferred_pops"`
	// Vantage is the site whose probes stand for this region's clients when ranking POPs
	// by RTT; its coordinates give the distance fallback. Empty: no RTT ranking.
	Vantage string `yaml:"vantage"`
}

// Validate checks references between sections and names the offending entry.
func (inv *Inventory) Validate() error {
	sites := map[string]bool{}
	for i, s := range inv.Sites {
		if s.Name == "" {
			return fmt.Errorf("inventory.sites[%d].name: empty", i)
		}
		if sites[s.Name] {
			return fmt.Errorf("inventory.sites[%d].name: duplicate site %q", i, s.Name)
		}
		sites[s.Name] = true
	}
	for i, c := range inv.Clusters {
		if !sites[c.Site] {
			return fmt.Errorf("inventory.clusters[%d].site: cluster %q: unknown site %q", i, c.Name, c.Site)
		}
	}
	for i, n := range inv.Nodes {
		if !sites[n.Site] {
			return fmt.Errorf("inventory.nodes[%d].site: node %q: unknown site %q", i, n.Name, n.Site)
		}
	}
	pops := map[string]bool{}
	for i, p := range inv.POPs {
		if !sites[p.Site] {
			return fmt.Errorf("inventory.pops[%d].site: POP %q: unknown site %q", i, p.Name, p.Site)
		}
		if pops[p.Name] {
			return fmt.Errorf("inventory.pops[%d].name: duplicate POP %q", i, p.Name)
		}
		pops[p.Name] = true
	}
	for i, s := range inv.Services {
		for _, p := range s.POPs {
			if !pops[p] {
				return fmt.Errorf("inventory.services[%d].pops: service %q: unknown POP %q", i, s.Name, p)
			}
		}
	}
	for i, r := range inv.ClientRegions {
		for _, p := range append(append([]string{}, r.AllowedPOPs...), r.Preferred...) {
			if !pops[p] {
				return fmt.Errorf("inventory.client_regions[%d]: region %q: unknown POP %q", i, r.Name, p)
			}
		}
	}
	return nil
}

// Site returns the named site.
func (inv *Inventory) Site(name string) (Site, bool) {
	for _, s := range inv.Sites {
		if s.Name == name {
			return s, true
		}
	}
	return Site{}, false
}

// NodeByWireGuardKey returns the node owning a WireGuard public key.
func (inv *Inventory) NodeByWireGuardKey(key string) (Node, bool) {
	for _, n := range inv.Nodes {
		if n.WireGuardKey == key && key != "" {
			return n, true
		}
	}
	return Node{}, false
}

// NodeByCephHost returns the node whose Ceph host name (or node name) is host.
func (inv *Inventory) NodeByCephHost(host string) (Node, bool) {
	for _, n := range inv.Nodes {
		if n.CephHost == host || (n.CephHost == "" && n.Name == host) {
			return n, true
		}
	}
	return Node{}, false
}

// POP returns the named POP.
func (inv *Inventory) POP(name string) (POP, bool) {
	for _, p := range inv.POPs {
		if p.Name == name {
			return p, true
		}
	}
	return POP{}, false
}
