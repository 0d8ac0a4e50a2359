// Package inventory is the world Meridian watches: regions, sites, clusters, nodes, POPs,
// services, client regions and workloads. It merges the configuration file's
// `inventory:` section with what the Kubernetes and Karmada APIs say (Live), and serves
// it as immutable, indexed, versioned snapshots (Snapshot) every record is mapped onto.
package inventory

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Inventory is the whole declared world.
type Inventory struct {
	Sites         []Site         `yaml:"sites"`
	Clusters      []Cluster      `yaml:"clusters"`
	Nodes         []Node         `yaml:"nodes"`
	POPs          []POP          `yaml:"pops"`
	Services      []Service      `yaml:"services"`
	ClientRegions []ClientRegion `yaml:"client_regions"`

	// Discovered from the Kubernetes API only: the owners flow endpoints are named after.
	Namespaces []Namespace `yaml:"-"`
	Workloads  []Workload  `yaml:"-"`
}

// Namespace is a Kubernetes namespace of a cluster.
type Namespace struct {
	Cluster, Name string
}

// Workload is a pod owner read from the API: a Deployment or a StatefulSet.
type Workload struct {
	Cluster, Namespace, Name string
	Kind                     string // Deployment, StatefulSet
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

// Cluster is a Kubernetes cluster at a site, or spread over a region's zones.
type Cluster struct {
	Name     string   `yaml:"name"`
	Site     string   `yaml:"site"`
	Region   string   `yaml:"region"`
	Zones    []string `yaml:"zones"`
	Provider string   `yaml:"provider"`
}

// Node is a machine in the WireGuard mesh.
type Node struct {
	Name         string `yaml:"name"`
	Site         string `yaml:"site"`
	Cluster      string `yaml:"cluster"`
	WireGuardKey string `yaml:"wireguard_key"` // base64 public key
	CephHost     string `yaml:"ceph_host"`     // Ceph's name for this host, when it runs OSDs
	// PodCIDRs are the pod address ranges the node hands out (Node spec.podCIDRs).
	PodCIDRs []netip.Prefix `yaml:"pod_cidrs"`
}

// POP is a point of presence answering for services behind a VIP.
type POP struct {
	Name       string       `yaml:"name"`
	Site       string       `yaml:"site"`
	VIPs       []netip.Addr `yaml:"vips"`        // A and AAAA answers
	HealthURL  string       `yaml:"health_url"`  // HTTP(S) probe target
	TCPAddr    string       `yaml:"tcp_addr"`    // host:port for TCP connect probes
	BaseWeight float64      `yaml:"base_weight"` // default 1
	Capacity   Capacity     `yaml:"capacity"`    // what the POP's front door can carry; zero: unknown
}

// Capacity is how much traffic a POP's front door carries before it degrades; zero
// fields are unknown. Steering sheds load between watermarks of SessionsPerSecond and
// spreads a drained POP's regions by the headroom under it (steering/README.md,
// "Capacity"); the map and the front-door dashboard show utilisation against both.
type Capacity struct {
	// SessionsPerSecond is the new-session rate the POP's HAProxy sustains: the unit of
	// steering's load input, because a DNS weight moves new sessions, not bytes.
	SessionsPerSecond float64 `yaml:"sessions_per_second"`
	Bandwidth         float64 `yaml:"bandwidth"` // bytes per second out
}

// Utilisation is the larger of sessionRate and bytesOut as shares of the capacity; 0
// when neither capacity is set.
func (c Capacity) Utilisation(sessionRate, bytesOut float64) float64 {
	u := 0.0
	if c.SessionsPerSecond > 0 {
		u = sessionRate / c.SessionsPerSecond
	}
	if c.Bandwidth > 0 {
		u = max(u, bytesOut/c.Bandwidth)
	}
	return u
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

// Validate checks every value of the inventory: ranges (coordinates, weights), formats
// (WireGuard keys, addresses, URLs, country codes), references between sections and
// duplicate names. It reports every problem, each as "inventory.<path>: what is wrong",
// joined with errors.Join, so a file's mistakes are fixed in one pass.
func (inv *Inventory) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	// names records each entry's name and reports an empty or repeated one.
	names := func(kind, section string, i int, name string, seen map[string]bool) {
		switch {
		case name == "":
			bad("inventory.%s[%d].name: empty (every %s needs a name)", section, i, kind)
		case seen[name]:
			bad("inventory.%s[%d].name: duplicate %s %q", section, i, kind, name)
		}
		seen[name] = true
	}
	sites, clusters, pops := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i, s := range inv.Sites {
		names("site", "sites", i, s.Name, sites)
		if s.Lat < -90 || s.Lat > 90 || math.IsNaN(s.Lat) {
			bad("inventory.sites[%d].lat: %v is not a latitude (-90 to 90)", i, s.Lat)
		}
		if s.Lon < -180 || s.Lon > 180 || math.IsNaN(s.Lon) {
			bad("inventory.sites[%d].lon: %v is not a longitude (-180 to 180)", i, s.Lon)
		}
	}
	site := func(path, owner string, name string) {
		if !sites[name] {
			bad("%s: %s: unknown site %q (declare it under inventory.sites)", path, owner, name)
		}
	}
	clusterSite := map[string]string{}
	for i, c := range inv.Clusters {
		names("cluster", "clusters", i, c.Name, clusters)
		if c.Site != "" || c.Region == "" { // a cluster spread over a region's zones names no site
			site(fmt.Sprintf("inventory.clusters[%d].site", i), "cluster "+strconv.Quote(c.Name), c.Site)
		}
		clusterSite[c.Name] = c.Site
	}
	nodes, keys := map[string]bool{}, map[string]string{}
	for i, n := range inv.Nodes {
		names("node", "nodes", i, n.Name, nodes)
		owner := "node " + strconv.Quote(n.Name)
		site(fmt.Sprintf("inventory.nodes[%d].site", i), owner, n.Site)
		if n.Cluster != "" {
			if cs, ok := clusterSite[n.Cluster]; !ok {
				bad("inventory.nodes[%d].cluster: %s: unknown cluster %q (declare it under inventory.clusters)", i, owner, n.Cluster)
			} else if cs != n.Site && cs != "" && sites[n.Site] {
				bad("inventory.nodes[%d].cluster: %s is at site %q but its cluster %q is at %q", i, owner, n.Site, n.Cluster, cs)
			}
		}
		if n.WireGuardKey != "" {
			if err := checkWireGuardKey(n.WireGuardKey); err != nil {
				bad("inventory.nodes[%d].wireguard_key: %s: %v", i, owner, err)
			} else if other, dup := keys[n.WireGuardKey]; dup {
				bad("inventory.nodes[%d].wireguard_key: %s has the same key as node %q", i, owner, other)
			}
			keys[n.WireGuardKey] = n.Name
		}
	}
	vips := map[netip.Addr]string{}
	for i, p := range inv.POPs {
		names("POP", "pops", i, p.Name, pops)
		owner := "POP " + strconv.Quote(p.Name)
		site(fmt.Sprintf("inventory.pops[%d].site", i), owner, p.Site)
		if len(p.VIPs) == 0 {
			bad("inventory.pops[%d].vips: %s has no VIPs (GeoDNS answers with them)", i, owner)
		}
		for j, a := range p.VIPs {
			if !a.IsValid() {
				continue // the file's value did not parse, and was reported with its line
			}
			if other, dup := vips[a]; dup {
				bad("inventory.pops[%d].vips[%d]: %s: %s is also a VIP of POP %q", i, j, owner, a, other)
			}
			vips[a] = p.Name
		}
		if p.HealthURL != "" {
			if u, err := url.Parse(p.HealthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("inventory.pops[%d].health_url: %s: %q is not an http:// or https:// URL with a host", i, owner, p.HealthURL)
			}
		}
		if p.TCPAddr != "" {
			if _, port, err := net.SplitHostPort(p.TCPAddr); err != nil || port == "" {
				bad("inventory.pops[%d].tcp_addr: %s: %q is not host:port", i, owner, p.TCPAddr)
			}
		}
		if p.BaseWeight < 0 || math.IsNaN(p.BaseWeight) || math.IsInf(p.BaseWeight, 0) {
			bad("inventory.pops[%d].base_weight: %s: %v is negative or not a number (0 means the default, 1)", i, owner, p.BaseWeight)
		}
		for _, c := range []struct {
			field string
			v     float64
		}{{"sessions_per_second", p.Capacity.SessionsPerSecond}, {"bandwidth", p.Capacity.Bandwidth}} {
			if c.v < 0 || math.IsNaN(c.v) || math.IsInf(c.v, 0) {
				bad("inventory.pops[%d].capacity.%s: %s: %v is not a positive rate (leave it out when unknown)", i, c.field, owner, c.v)
			}
		}
	}
	pop := func(path, owner, name string) {
		if !pops[name] {
			bad("%s: %s: unknown POP %q (declare it under inventory.pops)", path, owner, name)
		}
	}
	services := map[string]bool{}
	for i, s := range inv.Services {
		names("service", "services", i, s.Name, services)
		if len(s.POPs) == 0 {
			bad("inventory.services[%d].pops: service %q has no POPs", i, s.Name)
		}
		for j, p := range s.POPs {
			pop(fmt.Sprintf("inventory.services[%d].pops[%d]", i, j), "service "+strconv.Quote(s.Name), p)
		}
	}
	regions := map[string]bool{}
	for i, r := range inv.ClientRegions {
		names("client region", "client_regions", i, r.Name, regions)
		owner := "region " + strconv.Quote(r.Name)
		for j, c := range r.Countries {
			if len(c) != 2 || strings.ToUpper(c) != c || !isLetters(c) {
				bad("inventory.client_regions[%d].countries[%d]: %s: %q is not an ISO 3166-1 alpha-2 code (e.g. FR)", i, j, owner, c)
			}
		}
		for j, c := range r.Continents {
			if !slices.Contains(continents, c) {
				bad("inventory.client_regions[%d].continents[%d]: %s: %q is not one of %s", i, j, owner, c, strings.Join(continents, ", "))
			}
		}
		for j, p := range r.AllowedPOPs {
			pop(fmt.Sprintf("inventory.client_regions[%d].allowed_pops[%d]", i, j), owner, p)
		}
		for j, p := range r.Preferred {
			pop(fmt.Sprintf("inventory.client_regions[%d].preferred_pops[%d]", i, j), owner, p)
			if len(r.AllowedPOPs) > 0 && pops[p] && !slices.Contains(r.AllowedPOPs, p) {
				bad("inventory.client_regions[%d].preferred_pops[%d]: %s prefers POP %q that its residency rule (allowed_pops) forbids", i, j, owner, p)
			}
		}
		if r.Vantage != "" {
			site(fmt.Sprintf("inventory.client_regions[%d].vantage", i), owner, r.Vantage)
		}
	}
	return errors.Join(errs...)
}

// continents are the codes GeoIP databases use.
var continents = []string{"AF", "AN", "AS", "EU", "NA", "OC", "SA"}

func isLetters(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 'A' || r > 'Z' })
}

// checkWireGuardKey accepts what `wg pubkey` prints: 32 bytes in standard base64.
func checkWireGuardKey(k string) error {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("%q is not a WireGuard public key (32 bytes in base64, as `wg pubkey` prints)", k)
	}
	return nil
}

// HasSite reports whether a site of that name is declared.
func (inv *Inventory) HasSite(name string) bool {
	return slices.ContainsFunc(inv.Sites, func(s Site) bool { return s.Name == name })
}

// HasCluster reports whether a cluster of that name is declared.
func (inv *Inventory) HasCluster(name string) bool {
	return slices.ContainsFunc(inv.Clusters, func(c Cluster) bool { return c.Name == name })
}

// Site returns the named site by a linear scan; Snapshot.Site is the indexed lookup.
func (inv *Inventory) Site(name string) (Site, bool) {
	i := slices.IndexFunc(inv.Sites, func(s Site) bool { return s.Name == name })
	if i < 0 {
		return Site{}, false
	}
	return inv.Sites[i], true
}

// POP returns the named POP by a linear scan; Snapshot.POP is the indexed lookup.
func (inv *Inventory) POP(name string) (POP, bool) {
	i := slices.IndexFunc(inv.POPs, func(p POP) bool { return p.Name == name })
	if i < 0 {
		return POP{}, false
	}
	return inv.POPs[i], true
}
