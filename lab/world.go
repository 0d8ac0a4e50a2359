// Package lab is a world on loopback that speaks the real protocols, modelled on the
// reference deployment of DESIGN.md: Hubble Relays replaying real flows, a ceph-mgr
// /metrics endpoint replaying a real capture, WireGuard exporters, and POP endpoints whose
// delay follows great-circle distance. Failures are injected through its control API.
// Meridian is pointed at it with an ordinary configuration: nothing in Meridian knows it.
package lab

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math"
	"net/netip"
	"sort"

	"github.com/meridianhq/meridian/inventory"
)

// Zone is the lab's DNS zone (.test is reserved for testing, RFC 6761).
const Zone = "meridian.test."

// vantage addresses: each site probes from its own loopback address, so a POP endpoint
// can tell which vantage asks and answer after that pair's delay.
func vantageAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}) }

// popAddr is a POP's VIP, also where its HTTP and TCP endpoints listen.
func popAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 2, byte(i + 1)}) }

// World returns the reference deployment's inventory. POP health URLs and TCP addresses
// are filled in by the running lab once its listeners have ports.
func World() *inventory.Inventory {
	inv := &inventory.Inventory{
		Sites: []inventory.Site{
			{Name: "tokyo", Region: "asia", Role: "brain", City: "Tokyo", Lat: 35.68, Lon: 139.69},
			{Name: "newyork", Region: "north-america", Role: "muscle", City: "New York", Lat: 40.71, Lon: -74.01},
			{Name: "nuremberg", Region: "europe", Role: "muscle", City: "Nuremberg", Lat: 49.45, Lon: 11.08},
			{Name: "london", Region: "europe", Role: "edge", City: "London", Lat: 51.51, Lon: -0.13},
			{Name: "paris", Region: "europe", Role: "edge", City: "Paris", Lat: 48.86, Lon: 2.35},
		},
		Clusters: []inventory.Cluster{
			{Name: "tokyo-brain", Site: "tokyo"},
			{Name: "ny-destroyer", Site: "newyork"},
			{Name: "ny-vault", Site: "newyork"},
			{Name: "nbg-aegis", Site: "nuremberg"},
			{Name: "lon-edge", Site: "london"},
			{Name: "par-edge", Site: "paris"},
		},
		Services: []inventory.Service{
			{Name: "api." + Zone, POPs: []string{"tokyo", "newyork", "nuremberg"}},
			{Name: "www." + Zone, POPs: []string{"newyork", "london", "paris"}},
		},
		ClientRegions: []inventory.ClientRegion{
			// France has no residency rule: it may be served from anywhere, nearest first.
			{Name: "france", Vantage: "paris", Countries: []string{"FR"}, CIDRs: prefixes("198.51.100.0/26"), SamplePrefix: netip.MustParsePrefix("198.51.100.0/26")},
			// Germany's data stays in the EU: only EU POPs, even when all of them are sick.
			{Name: "germany", Vantage: "nuremberg", Countries: []string{"DE"}, CIDRs: prefixes("198.51.100.64/26"), SamplePrefix: netip.MustParsePrefix("198.51.100.64/26"),
				AllowedPOPs: []string{"nuremberg", "london", "paris"}},
			{Name: "united-kingdom", Vantage: "london", Countries: []string{"GB"}, CIDRs: prefixes("198.51.100.128/26"), SamplePrefix: netip.MustParsePrefix("198.51.100.128/26")},
			{Name: "north-america", Vantage: "newyork", Continents: []string{"NA"}, CIDRs: prefixes("203.0.113.0/25"), SamplePrefix: netip.MustParsePrefix("203.0.113.0/25")},
			{Name: "asia", Vantage: "tokyo", Continents: []string{"AS"}, CIDRs: prefixes("203.0.113.128/25"), SamplePrefix: netip.MustParsePrefix("203.0.113.128/25")},
		},
	}
	nodes := []struct{ name, site, cluster, ceph string }{
		{"tokyo-brain-1", "tokyo", "tokyo-brain", ""},
		{"ny-destroyer-1", "newyork", "ny-destroyer", ""},
		{"ny-destroyer-2", "newyork", "ny-destroyer", ""},
		{"ny-vault-1", "newyork", "ny-vault", "vault-1"},
		{"ny-vault-2", "newyork", "ny-vault", "vault-2"},
		{"ny-vault-3", "newyork", "ny-vault", "vault-3"},
		{"nbg-aegis-1", "nuremberg", "nbg-aegis", ""},
		{"lon-edge-1", "london", "lon-edge", ""},
		{"par-edge-1", "paris", "par-edge", ""},
	}
	for _, n := range nodes {
		inv.Nodes = append(inv.Nodes, inventory.Node{Name: n.name, Site: n.site, Cluster: n.cluster, WireGuardKey: publicKey(n.name), CephHost: n.ceph})
	}
	for i, s := range []string{"tokyo", "newyork", "nuremberg", "london", "paris"} {
		inv.POPs = append(inv.POPs, inventory.POP{Name: s, Site: s, VIPs: []netip.Addr{popAddr(i)}, BaseWeight: 1, Capacity: inventory.Capacity{SessionsPerSecond: labCapacity}})
	}
	return inv
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// publicKey is a stable stand-in WireGuard public key (32 bytes, base64) for a node.
func publicKey(node string) string {
	sum := sha256.Sum256([]byte("meridian-lab/" + node))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// SitePair names a tunnel between two sites the way the CLI takes it ("newyork-nuremberg"),
// in a stable order.
func SitePair(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return a + "-" + b
}

// RTT is the round trip between two sites: great-circle distance at two thirds of the speed
// of light, there and back, plus 1 ms of equipment.
func RTT(inv *inventory.Inventory, a, b string) float64 {
	sa, _ := inv.Site(a)
	sb, _ := inv.Site(b)
	km := greatCircleKm(sa.Lat, sa.Lon, sb.Lat, sb.Lon)
	return 1 + 2*km/200 // ms; light in fibre covers about 200 km per ms
}

func greatCircleKm(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	h := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Sqrt(h))
}

// siteNames lists the sites in a stable order.
func siteNames(inv *inventory.Inventory) []string {
	names := make([]string, len(inv.Sites))
	for i, s := range inv.Sites {
		names[i] = s.Name
	}
	sort.Strings(names)
	return names
}

// osdHost maps the lab's OSD ids to Ceph host names: two OSDs per vault node.
func osdHost(id int) string { return fmt.Sprintf("vault-%d", id/2+1) }

// OSDs is the number of OSDs in the lab's Ceph cluster.
const OSDs = 6
