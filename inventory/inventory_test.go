package inventory

import (
	"math"
	"net/netip"
	"strings"
	"testing"
)

// good is a small valid world; each case below breaks one thing in a copy of it.
func good() Inventory {
	return Inventory{
		Sites:    []Site{{Name: "paris", Lat: 48.86, Lon: 2.35}, {Name: "tokyo", Lat: 35.68, Lon: 139.69}},
		Clusters: []Cluster{{Name: "paris-edge", Site: "paris"}},
		Nodes: []Node{{Name: "p1", Site: "paris", Cluster: "paris-edge", WireGuardKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="},
			{Name: "t1", Site: "tokyo"}},
		POPs:          []POP{{Name: "paris", Site: "paris", VIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, HealthURL: "https://192.0.2.1/healthz", TCPAddr: "192.0.2.1:443"}},
		Services:      []Service{{Name: "api.example.net.", POPs: []string{"paris"}}},
		ClientRegions: []ClientRegion{{Name: "france", Countries: []string{"FR"}, Continents: []string{"EU"}, AllowedPOPs: []string{"paris"}, Vantage: "paris"}},
	}
}

func TestValidate(t *testing.T) {
	inv := good()
	if err := inv.Validate(); err != nil {
		t.Fatalf("valid world rejected: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Inventory)
		want   string
	}{
		{"latitude", func(i *Inventory) { i.Sites[0].Lat = 500 }, "inventory.sites[0].lat: 500 is not a latitude"},
		{"longitude", func(i *Inventory) { i.Sites[1].Lon = -181 }, "inventory.sites[1].lon:"},
		{"duplicate site", func(i *Inventory) { i.Sites[1].Name = "paris" }, `inventory.sites[1].name: duplicate site "paris"`},
		{"cluster's site", func(i *Inventory) { i.Clusters[0].Site = "osaka" }, `inventory.clusters[0].site: cluster "paris-edge": unknown site "osaka"`},
		{"node's cluster", func(i *Inventory) { i.Nodes[1].Cluster = "nowhere" }, `inventory.nodes[1].cluster: node "t1": unknown cluster "nowhere"`},
		{"node in another site's cluster", func(i *Inventory) { i.Nodes[1].Cluster = "paris-edge" }, `inventory.nodes[1].cluster: node "t1" is at site "tokyo" but its cluster "paris-edge" is at "paris"`},
		{"wireguard key", func(i *Inventory) { i.Nodes[0].WireGuardKey = "not-a-key" }, `inventory.nodes[0].wireguard_key: node "p1": "not-a-key" is not a WireGuard public key`},
		{"short wireguard key", func(i *Inventory) { i.Nodes[0].WireGuardKey = "AAAA" }, `inventory.nodes[0].wireguard_key`},
		{"shared wireguard key", func(i *Inventory) { i.Nodes[1].WireGuardKey = i.Nodes[0].WireGuardKey }, `inventory.nodes[1].wireguard_key: node "t1" has the same key as node "p1"`},
		{"duplicate node", func(i *Inventory) { i.Nodes[1].Name = "p1" }, `inventory.nodes[1].name: duplicate node "p1"`},
		{"no VIPs", func(i *Inventory) { i.POPs[0].VIPs = nil }, `inventory.pops[0].vips: POP "paris" has no VIPs`},
		{"health URL scheme", func(i *Inventory) { i.POPs[0].HealthURL = "pop.example.net/healthz" }, `inventory.pops[0].health_url:`},
		{"tcp address", func(i *Inventory) { i.POPs[0].TCPAddr = "192.0.2.1" }, `inventory.pops[0].tcp_addr:`},
		{"weight", func(i *Inventory) { i.POPs[0].BaseWeight = -0.5 }, `inventory.pops[0].base_weight:`},
		{"capacity", func(i *Inventory) { i.POPs[0].Capacity.SessionsPerSecond = -100 }, `inventory.pops[0].capacity.sessions_per_second: POP "paris": -100 is not a positive rate`},
		{"capacity NaN", func(i *Inventory) { i.POPs[0].Capacity.SessionsPerSecond = math.NaN() }, `inventory.pops[0].capacity.sessions_per_second:`},
		{"service's POP", func(i *Inventory) { i.Services[0].POPs = []string{"paris", "sydney"} }, `inventory.services[0].pops[1]: service "api.example.net.": unknown POP "sydney"`},
		{"country code", func(i *Inventory) { i.ClientRegions[0].Countries = []string{"france"} }, `inventory.client_regions[0].countries[0]:`},
		{"continent", func(i *Inventory) { i.ClientRegions[0].Continents = []string{"Europe"} }, `inventory.client_regions[0].continents[0]:`},
		{"vantage", func(i *Inventory) { i.ClientRegions[0].Vantage = "atlantis" }, `inventory.client_regions[0].vantage: region "france": unknown site "atlantis"`},
		{"preferred outside residency", func(i *Inventory) {
			i.POPs = append(i.POPs, POP{Name: "tokyo", Site: "tokyo", VIPs: []netip.Addr{netip.MustParseAddr("192.0.2.2")}})
			i.ClientRegions[0].Preferred = []string{"tokyo"}
		}, `inventory.client_regions[0].preferred_pops[0]: region "france" prefers POP "tokyo" that its residency rule`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := good()
			tc.mutate(&inv)
			err := inv.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestValidateReportsEveryProblem: one pass finds all of a file's mistakes.
func TestValidateReportsEveryProblem(t *testing.T) {
	inv := good()
	inv.Sites[0].Lat = 91
	inv.Nodes[0].WireGuardKey = "x"
	inv.POPs[0].VIPs = nil
	if n := strings.Count(inv.Validate().Error(), "\n") + 1; n != 3 {
		t.Fatalf("%d problems reported, want 3: %v", n, inv.Validate())
	}
}
