package authdns

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// fastShapes are the query shapes the fast path exists for, as real clients send them.
func fastShapes() map[string]*dns.Msg {
	upper := query("API.Example.NET.", dns.TypeA, "81.2.69.142/31") // 0x20 case randomisation
	noRD := query("api.example.net.", dns.TypeA, "2a02:cfc0::/29")
	noRD.RecursionDesired, noRD.CheckingDisabled = false, true
	noECS := query("api.example.net.", dns.TypeA, "")
	noECS.SetEdns0(4096, true)
	return map[string]*dns.Msg{
		"A, ECS v6 (France)":    query("api.example.net.", dns.TypeA, "2a02:cfc0::/32"),
		"A, ECS v4 (dnsperf's)": query("api.example.net.", dns.TypeA, "216.160.83.0/24"),
		"AAAA, ECS v6":          query("api.example.net.", dns.TypeAAAA, "2a02:cfc0::/32"),
		"A, no EDNS":            query("img.cdn.example.net.", dns.TypeA, ""),
		"mixed case":            upper,
		"CD, no RD, odd source": noRD,
		"EDNS without ECS, DO":  noECS,
	}
}

func TestFastPathTakesCommonShapes(t *testing.T) {
	s, _ := newTestServer(t)
	rs := newReaderState()
	src := netip.MustParseAddr("192.0.2.1")
	out := make([]byte, 0, 4096)
	for name, m := range fastShapes() {
		t.Run(name, func(t *testing.T) {
			b, err := m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := s.fastAnswer(b, src, out, rs); !ok {
				t.Fatal("fell back to miekg/dns")
			}
			checkSameAnswer(t, s, rs, b, src)
			if n := testing.AllocsPerRun(100, func() { s.fastAnswer(b, src, out, rs) }); n != 0 {
				t.Fatalf("%v allocations per query, want 0", n)
			}
		})
	}
	for name, m := range map[string]*dns.Msg{
		"SOA":      query("example.net.", dns.TypeSOA, ""),
		"NXDOMAIN": query("nope.example.net.", dns.TypeA, ""),
		"outside":  query("example.org.", dns.TypeA, ""),
		"ECS /0":   query("api.example.net.", dns.TypeA, "0.0.0.0/0"),
		"NODATA":   query("api.example.net.", dns.TypeAAAA, "216.160.83.0/24"), // nyc has no IPv6
	} {
		b, _ := m.Pack()
		if _, ok := s.fastAnswer(b, src, out, rs); ok {
			t.Errorf("%s: answered by the fast path, want miekg/dns", name)
		}
	}
	if len(rs.services) != 2 {
		t.Fatalf("learned names %v, want only the two services", rs.services)
	}
}

// checkSameAnswer fails unless the miekg/dns path gives the same response as the fast
// path for request b (the test policy's sets have one choice: the pick is fixed).
func checkSameAnswer(t *testing.T, s *Server, rs *readerState, b []byte, src netip.Addr) {
	t.Helper()
	fast, ok := s.fastAnswer(b, src, nil, rs)
	if !ok {
		return
	}
	got := new(dns.Msg)
	if err := got.Unpack(fast); err != nil {
		t.Fatalf("fast answer does not parse: %v", err)
	}
	ref := s.handleWire(b, src, true)
	if ref == nil {
		t.Fatalf("fast path answered a request the miekg path drops:\n%v", got)
	}
	wire, err := ref.Pack()
	if err != nil {
		t.Fatal(err)
	}
	want := new(dns.Msg)
	if err := want.Unpack(wire); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Fatalf("fast path and miekg/dns differ\nfast:\n%v\nmiekg:\n%v", got, want)
	}
}

// FuzzFastMatchesMiekg: whatever the fast path answers, the miekg/dns path answers the
// same way; and the fast path never panics on any bytes.
func FuzzFastMatchesMiekg(f *testing.F) {
	s, _ := newTestServer(f)
	for _, m := range fastShapes() {
		b, _ := m.Pack()
		f.Add(b)
	}
	rs := newReaderState()
	src := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		checkSameAnswer(t, s, rs, b, src)
	})
}
