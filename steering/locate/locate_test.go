package locate

import (
	"net/netip"
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
