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
