package locate

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meridianhq/meridian/inventory"
)

var regions = []inventory.ClientRegion{
	{Name: "france", Countries: []string{"fr"}},
	{Name: "asia", Continents: []string{"AS"}},
	{Name: "wide", CIDRs: []netip.Prefix{netip.MustParsePrefix("81.2.69.0/24")}},
	{Name: "lab", CIDRs: []netip.Prefix{netip.MustParsePrefix("81.2.69.160/27")}},
}

func TestLocate(t *testing.T) {
	for _, db := range []string{"GeoIP2-City-Test.mmdb", "GeoIP2-Country-Test.mmdb"} {
		l, err := New(regions, "../../testdata/geoip/"+db)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			addr   string
			bits   int
			region string
			scope  int
		}{
			{"2a02:cfc0::", 48, "france", 29},        // FR by country
			{"175.16.199.0", 24, "asia", 24},         // CN by continent
			{"81.2.69.170", 32, "lab", 27},           // longest CIDR override beats GeoIP (GB)
			{"81.2.69.142", 32, "wide", 24},          // GB address under the wider override
			{"89.160.20.130", 32, "", 25},            // SE: no region
			{"::ffff:175.16.199.1", 128, "asia", 24}, // v4-mapped source
			{"127.0.0.1", 32, "", 8},                 // not in the database: scope of the empty network
		} {
			got := l.Locate(netip.MustParseAddr(tc.addr), tc.bits)
			if got.Region != tc.region || got.Scope != tc.scope {
				t.Errorf("%s: Locate(%s/%d) = %+v, want region %q scope %d", db, tc.addr, tc.bits, got, tc.region, tc.scope)
			}
		}
		l.Close()
	}
}

func TestLocateErrors(t *testing.T) {
	if _, err := New(regions, "../../testdata/geoip/missing.mmdb"); err == nil || !strings.Contains(err.Error(), "missing.mmdb") {
		t.Fatalf("err = %v, want it to name the file", err)
	}
	// MaxMind's ASN test database: only autonomous_system_* fields, no location.
	_, err := New(regions, "../../testdata/geoip/GeoLite2-ASN-Test.mmdb")
	if err == nil || !strings.Contains(err.Error(), "GeoLite2-ASN-Test.mmdb") || !strings.Contains(err.Error(), `database_type "GeoLite2-ASN"`) {
		t.Fatalf("err = %v, want a refusal naming the file and database_type", err)
	}
	dup := append(regions, inventory.ClientRegion{Name: "paris", Countries: []string{"FR"}})
	if _, err := New(dup, ""); err == nil || !strings.Contains(err.Error(), "country FR") {
		t.Fatalf("err = %v, want a duplicate-country error", err)
	}
}

// TestWithRegions: an inventory change makes a new locator over the same database and
// leaves the one in service as it was; a bad change is refused whole, naming each entry.
func TestWithRegions(t *testing.T) {
	l, err := New(regions, "../../testdata/geoip/GeoIP2-City-Test.mmdb")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	se, gb := netip.MustParseAddr("89.160.20.130"), netip.MustParseAddr("81.2.69.142")
	changed := append(slices.Clone(regions[:2]), inventory.ClientRegion{Name: "sweden", Countries: []string{"SE"}}, inventory.ClientRegion{Name: Fallback})
	n, err := l.WithRegions(changed)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		l       *Locator
		addr    netip.Addr
		want    string
		locator string
	}{
		{n, se, "sweden", "new"}, {n, gb, "", "new"}, // added; removed ("wide") falls back
		{l, se, "", "old"}, {l, gb, "wide", "old"},
	} {
		if got := tc.l.Locate(tc.addr, 32).Region; got != tc.want {
			t.Errorf("%s locator: Locate(%s) = %q, want %q", tc.locator, tc.addr, got, tc.want)
		}
	}

	bad := append(slices.Clone(regions),
		inventory.ClientRegion{Name: "nowhere", AllowedPOPs: []string{"nbg"}},
		inventory.ClientRegion{Name: "lab2", CIDRs: []netip.Prefix{netip.MustParsePrefix("81.2.69.161/27")}})
	_, err = l.WithRegions(bad)
	for _, want := range []string{`client region "nowhere" has no countries, continents or cidrs`, `client regions "lab" and "lab2" both claim CIDR 81.2.69.160/27`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
}
