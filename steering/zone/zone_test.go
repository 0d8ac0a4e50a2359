package zone

import (
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	z, err := New(Config{Origin: "example.net", NegativeTTL: 30}, []string{"api.example.net.", "img.cdn.EXAMPLE.net."})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]Kind{
		"example.net.":         Apex,
		"API.example.NET.":     Service,
		"img.cdn.example.net.": Service,
		"cdn.example.net.":     Empty,
		"x.api.example.net.":   NXDomain,
		"other.example.net.":   NXDomain,
		"example.org.":         Outside,
		"net.":                 Outside,
		".":                    Outside,
	} {
		if _, got := z.Lookup(name); got != want {
			t.Errorf("Lookup(%q) = %d, want %d", name, got, want)
		}
	}
	if z.NegativeSOA().Header().Ttl != 30 || z.SOA().Hdr.Ttl != 3600 {
		t.Fatalf("negative SOA TTL %d, SOA TTL %d", z.NegativeSOA().Header().Ttl, z.SOA().Hdr.Ttl)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{Origin: "example.net."}, []string{"api.example.org."}); err == nil || !strings.Contains(err.Error(), "outside zone") {
		t.Fatalf("err = %v, want service outside zone", err)
	}
	if _, err := New(Config{}, nil); err == nil || !strings.Contains(err.Error(), "origin") {
		t.Fatalf("err = %v, want missing origin", err)
	}
}

// TestWithServices: an inventory change makes a new zone with a higher serial and leaves
// the one in service as it was; a bad service name is refused, naming it.
func TestWithServices(t *testing.T) {
	z, err := New(Config{Origin: "example.net.", NegativeTTL: 30}, []string{"api.example.net.", "img.cdn.example.net."})
	if err != nil {
		t.Fatal(err)
	}
	n, err := z.WithServices([]string{"api.example.net.", "new.example.net."})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		z    *Zone
		name string
		want Kind
	}{
		{n, "new.example.net.", Service}, {n, "img.cdn.example.net.", NXDomain}, {n, "cdn.example.net.", NXDomain}, {n, "api.example.net.", Service},
		{z, "new.example.net.", NXDomain}, {z, "img.cdn.example.net.", Service},
	} {
		if _, got := tc.z.Lookup(tc.name); got != tc.want {
			t.Errorf("Lookup(%q) = %d, want %d", tc.name, got, tc.want)
		}
	}
	if n.SOA().Serial <= z.SOA().Serial {
		t.Errorf("serial %d after a change, want more than %d", n.SOA().Serial, z.SOA().Serial)
	}
	_, err = z.WithServices([]string{"api.example.net.", "bad name.example.net.", "x\\.y.example.net.", "example.net.", "api.example.org."})
	for _, want := range []string{`service "bad name.example.net." is not a valid DNS name`, `service "x\\.y.example.net." is not a valid DNS name`,
		`service "example.net." is the zone's apex`, `service "api.example.org." is outside zone`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
}
