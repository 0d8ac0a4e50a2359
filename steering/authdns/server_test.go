package authdns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/steering/locate"
	"github.com/meridianhq/meridian/steering/pick"
	"github.com/meridianhq/meridian/steering/zone"
)

// staticPolicy answers every region with one fixed set per region name.
type staticPolicy map[string]*pick.Set

func (p staticPolicy) Answers(_, region string) *pick.Set {
	if s, ok := p[region]; ok {
		return s
	}
	return p["default"]
}

var (
	paris = pick.NewSet([]pick.Choice{{POP: "nbg", Weight: 1, V4: []netip.Addr{netip.MustParseAddr("127.0.1.1")}, V6: []netip.Addr{netip.MustParseAddr("2001:db8::1")}}})
	world = pick.NewSet([]pick.Choice{{POP: "nyc", Weight: 1, V4: []netip.Addr{netip.MustParseAddr("127.0.1.2")}}})
)

func newTestServer(t testing.TB) (*Server, *prometheus.Registry) {
	t.Helper()
	z, err := zone.New(zone.Config{Origin: "Example.NET.", NSAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.53")}, NegativeTTL: 30}, []string{"api.example.net.", "img.cdn.example.net."})
	if err != nil {
		t.Fatal(err)
	}
	l, err := locate.New([]inventory.ClientRegion{{Name: "france", Countries: []string{"FR"}}}, "../../testdata/geoip/GeoIP2-City-Test.mmdb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	reg := prometheus.NewRegistry()
	s, err := New(Config{Listen: "127.0.0.1:0", TTL: 30, UDPListeners: 1, MaxTCPConns: 4}, Deps{Table: Table{Zone: z, Locator: l}, Policy: staticPolicy{"france": paris, "default": world}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func query(name string, qtype uint16, ecs string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	if ecs != "" {
		p := netip.MustParsePrefix(ecs)
		fam := uint16(1)
		if p.Addr().Is6() {
			fam = 2
		}
		m.SetEdns0(1232, false)
		o := m.IsEdns0()
		o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: fam, SourceNetmask: uint8(p.Bits()), Address: p.Addr().AsSlice()})
	}
	return m
}

func TestAnswerTable(t *testing.T) {
	s, _ := newTestServer(t)
	src := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name      string
		q         *dns.Msg
		rcode     int
		aa        bool
		answers   int
		authority uint16 // type expected in authority, 0 none
		first     string // first answer's address or target
		scope     int    // ECS scope expected, -1 none
	}{
		{"A from France via ECS", query("api.example.net.", dns.TypeA, "2a02:cfc0::/32"), dns.RcodeSuccess, true, 1, 0, "127.0.1.1", 29},
		{"AAAA from France, 0x20 case", query("aPi.ExAmple.NET.", dns.TypeAAAA, "2a02:cfc0::/48"), dns.RcodeSuccess, true, 1, 0, "2001:db8::1", 29},
		{"A from elsewhere (source)", query("api.example.net.", dns.TypeA, ""), dns.RcodeSuccess, true, 1, 0, "127.0.1.2", -1},
		{"ECS /0 means do not locate", query("api.example.net.", dns.TypeA, "0.0.0.0/0"), dns.RcodeSuccess, true, 1, 0, "127.0.1.2", 0},
		{"AAAA where the POP has none: NODATA", query("api.example.net.", dns.TypeAAAA, ""), dns.RcodeSuccess, true, 0, dns.TypeSOA, "", -1},
		{"MX on a service: NODATA", query("api.example.net.", dns.TypeMX, ""), dns.RcodeSuccess, true, 0, dns.TypeSOA, "", -1},
		{"unknown type: NODATA", query("api.example.net.", 65280, ""), dns.RcodeSuccess, true, 0, dns.TypeSOA, "", -1},
		{"SOA at apex", query("example.net.", dns.TypeSOA, ""), dns.RcodeSuccess, true, 1, 0, "", -1},
		{"NS at apex", query("example.net.", dns.TypeNS, ""), dns.RcodeSuccess, true, 1, 0, "ns1.example.net.", -1},
		{"A at apex: NODATA", query("example.net.", dns.TypeA, ""), dns.RcodeSuccess, true, 0, dns.TypeSOA, "", -1},
		{"NS glue", query("ns1.example.net.", dns.TypeA, ""), dns.RcodeSuccess, true, 1, 0, "127.0.0.53", -1},
		{"empty non-terminal: NODATA", query("cdn.example.net.", dns.TypeA, ""), dns.RcodeSuccess, true, 0, dns.TypeSOA, "", -1},
		{"missing name: NXDOMAIN", query("nope.example.net.", dns.TypeA, ""), dns.RcodeNameError, true, 0, dns.TypeSOA, "", -1},
		{"below a service: NXDOMAIN", query("x.api.example.net.", dns.TypeA, ""), dns.RcodeNameError, true, 0, dns.TypeSOA, "", -1},
		{"outside the zone: REFUSED", query("example.org.", dns.TypeA, ""), dns.RcodeRefused, false, 0, 0, "", -1},
		{"zone transfer: REFUSED", query("example.net.", dns.TypeAXFR, ""), dns.RcodeRefused, false, 0, 0, "", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.Answer(tc.q, src, true)
			if r.Rcode != tc.rcode || r.Authoritative != tc.aa || r.RecursionAvailable || !r.Response {
				t.Fatalf("rcode %s aa %v ra %v qr %v, want %s aa %v ra false qr true", dns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable, r.Response, dns.RcodeToString[tc.rcode], tc.aa)
			}
			if len(r.Answer) != tc.answers {
				t.Fatalf("answers %v, want %d", r.Answer, tc.answers)
			}
			if tc.authority != 0 && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != tc.authority || r.Ns[0].Header().Ttl != 30) {
				t.Fatalf("authority %v, want one %s with the negative TTL", r.Ns, dns.TypeToString[tc.authority])
			}
			if tc.first != "" {
				var got string
				switch rr := r.Answer[0].(type) {
				case *dns.A:
					got = rr.A.String()
				case *dns.AAAA:
					got = rr.AAAA.String()
				case *dns.NS:
					got = rr.Ns
				}
				if got != tc.first {
					t.Fatalf("answer %v, want %s", r.Answer[0], tc.first)
				}
				if r.Answer[0].Header().Rrtype != dns.TypeNS && r.Answer[0].Header().Rrtype != dns.TypeSOA && r.Answer[0].Header().Name != tc.q.Question[0].Name {
					t.Fatalf("owner %q, want the question's %q", r.Answer[0].Header().Name, tc.q.Question[0].Name)
				}
			}
			scope := -1
			if o := r.IsEdns0(); o != nil {
				for _, opt := range o.Option {
					if e, ok := opt.(*dns.EDNS0_SUBNET); ok {
						scope = int(e.SourceScope)
					}
				}
			}
			if scope != tc.scope {
				t.Fatalf("ECS scope %d, want %d", scope, tc.scope)
			}
		})
	}
}

func TestAnswerEDNSAndClass(t *testing.T) {
	s, _ := newTestServer(t)
	src := netip.MustParseAddr("127.0.0.1")
	m := query("api.example.net.", dns.TypeA, "")
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	if r := s.Answer(m, src, true); r.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS version 1: rcode %s, want BADVERS", dns.RcodeToString[r.Rcode])
	}
	m = query("version.bind.", dns.TypeTXT, "")
	m.Question[0].Qclass = dns.ClassCHAOS
	if r := s.Answer(m, src, true); r.Rcode != dns.RcodeRefused {
		t.Fatalf("CH TXT version.bind: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	m = query("api.example.net.", dns.TypeA, "")
	m.Response = true
	if r := s.Answer(m, src, true); r != nil {
		t.Fatalf("a response was answered: %v", r)
	}
}

// startServer runs the server on a free loopback port.
func startServer(t testing.TB) (*Server, *prometheus.Registry, string) {
	s, reg := newTestServer(t)
	if err := services.StartAndAwaitRunning(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), s) })
	return s, reg, s.Addr().String()
}

// rawExchange sends bytes over UDP and returns the reply, or nil when none comes
// within the deadline (the server must drop some messages).
func rawExchange(t *testing.T, addr string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestBadInputOverTheWire(t *testing.T) {
	srv, _, addr := startServer(t)
	valid, _ := query("api.example.net.", dns.TypeA, "").Pack()
	header := func(mut func(h []byte)) []byte {
		b := append([]byte(nil), valid...)
		mut(b)
		return b
	}
	bigEDNS := query("api.example.net.", dns.TypeA, "")
	bigEDNS.SetEdns0(4096, false)
	bigEDNS.IsEdns0().Option = append(bigEDNS.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 9000)})
	oversized, err := bigEDNS.Pack()
	if err != nil {
		t.Fatal(err)
	}
	v1 := query("api.example.net.", dns.TypeA, "")
	v1.SetEdns0(1232, false)
	v1.IsEdns0().SetVersion(1)
	ednsV1, _ := v1.Pack()
	for _, tc := range []struct {
		name  string
		msg   []byte
		rcode int // -1: must be dropped
	}{
		{"3 bytes of garbage", []byte{0xde, 0xad, 0xbe}, -1},
		{"truncated question", valid[:len(valid)-3], dns.RcodeFormatError},
		{"two questions", header(func(h []byte) { binary.BigEndian.PutUint16(h[4:], 2) }), dns.RcodeFormatError},
		{"claims 5 additional records", header(func(h []byte) { binary.BigEndian.PutUint16(h[10:], 5) }), dns.RcodeFormatError},
		{"a response (QR set)", header(func(h []byte) { h[2] |= 0x80 }), -1},
		{"UPDATE opcode", header(func(h []byte) { h[2] = h[2]&^0x78 | dns.OpcodeUpdate<<3 }), dns.RcodeNotImplemented},
		{"9 KB query with padding", oversized, dns.RcodeSuccess},
		{"garbage after the message", append(append([]byte(nil), valid...), 1, 2, 3), dns.RcodeSuccess},
		{"EDNS version 1", ednsV1, dns.RcodeBadVers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := rawExchange(t, addr, tc.msg)
			if tc.rcode < 0 {
				if b != nil {
					t.Fatalf("got a %d-byte reply, want the message dropped", len(b))
				}
				return
			}
			if b == nil {
				t.Fatal("no reply")
			}
			r := new(dns.Msg)
			if err := r.Unpack(b); err != nil {
				t.Fatalf("unparseable reply: %v", err)
			}
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
		})
	}
	// Still alive and answering.
	r, err := dns.Exchange(query("api.example.net.", dns.TypeA, ""), addr)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("server unhealthy after bad input: %v %v", r, err)
	}
	// Invalid: the garbage, the truncated question and the two the accept rules reject.
	if n := testutil.ToFloat64(srv.invalid); n != 4 {
		t.Errorf("invalid requests counted %v, want 4", n)
	}
	if n := testutil.ToFloat64(srv.ignored); n != 1 {
		t.Errorf("dropped responses counted %v, want 1", n)
	}
	// Every reply is counted by its rcode, the fast path's (the last query) too; 16 is
	// BADVERS here, never BADSIG.
	for rcode, want := range map[string]float64{"NOERROR": 3, "FORMERR": 3, "NOTIMP": 1, "BADVERS": 1, "BADSIG": 0} {
		if n := testutil.ToFloat64(srv.queries.WithLabelValues(rcode)); n != want {
			t.Errorf("responses_total{rcode=%q} = %v, want %v", rcode, n, want)
		}
	}
}

func TestTCPAndTruncation(t *testing.T) {
	_, _, addr := startServer(t)
	c := &dns.Client{Net: "tcp"}
	r, _, err := c.Exchange(query("api.example.net.", dns.TypeA, "2a02:cfc0::/32"), addr)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.1.1" {
		t.Fatalf("TCP answer %v, err %v", r, err)
	}
}

// Over TCP, dns.Server applies the accept rules and writes the FORMERR itself: the
// rejected request still counts as invalid and its reply by rcode, and a response is
// dropped and counted.
func TestTCPBadInputIsCounted(t *testing.T) {
	srv, _, addr := startServer(t)
	send := func(mut func(m *dns.Msg)) *dns.Msg {
		t.Helper()
		m := query("api.example.net.", dns.TypeA, "")
		mut(m)
		conn, err := dns.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		r, err := conn.ReadMsg()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := send(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }); r == nil || r.Rcode != dns.RcodeFormatError {
		t.Fatalf("two questions over TCP: %v, want FORMERR", r)
	}
	if r := send(func(m *dns.Msg) { m.Response = true }); r != nil {
		t.Fatalf("a response over TCP was answered: %v", r)
	}
	if n := testutil.ToFloat64(srv.invalid); n != 1 {
		t.Errorf("invalid requests counted %v, want 1", n)
	}
	if n := testutil.ToFloat64(srv.queries.WithLabelValues("FORMERR")); n != 1 {
		t.Errorf("FORMERR responses counted %v, want 1", n)
	}
	if n := testutil.ToFloat64(srv.ignored); n != 1 {
		t.Errorf("dropped responses counted %v, want 1", n)
	}
}

// FuzzAnswer feeds arbitrary datagrams through the UDP request path (header checks,
// parsing, the whole answer chain): it must never panic, and whatever it answers must pack.
func FuzzAnswer(f *testing.F) {
	s, _ := newTestServer(f)
	for _, m := range []*dns.Msg{
		query("api.example.net.", dns.TypeA, "2a02:cfc0::/32"),
		query("api.example.net.", dns.TypeAAAA, "81.2.69.142/31"),
		query("example.net.", dns.TypeSOA, ""),
		query("nope.example.net.", dns.TypeANY, "0.0.0.0/0"),
		query("example.org.", dns.TypeNS, ""),
	} {
		b, _ := m.Pack()
		f.Add(b)
	}
	src := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := s.handleWire(b, src, true)
		if resp == nil {
			return
		}
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, resp)
		}
	})
}

// TestUDPOverIPv6 covers the IPv6 sender addresses of the batched UDP loop.
func TestUDPOverIPv6(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		c.Close()
	}
	s, _ := newTestServer(t)
	s.cfg.Listen = "[::1]:0"
	if err := services.StartAndAwaitRunning(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), s) })
	for _, ecs := range []string{"", "2a02:cfc0::/32"} {
		r, err := dns.Exchange(query("api.example.net.", dns.TypeA, ecs), s.Addr().String())
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("ECS %q over IPv6: %v %v", ecs, r, err)
		}
	}
	assertPMTUOmitted(t, s, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_OMIT)
}

// TestRepliesIgnorePathMTU: replies are neither sized by an ICMP-learnt path MTU nor sent
// with Don't Fragment (omitPMTU), on every socket.
func TestRepliesIgnorePathMTU(t *testing.T) {
	s, _, _ := startServer(t)
	assertPMTUOmitted(t, s, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_OMIT)
}

func assertPMTUOmitted(t *testing.T, s *Server, level, opt, want int) {
	t.Helper()
	for i, u := range s.udp {
		if v, err := unix.GetsockoptInt(u.fd, level, opt); err != nil || v != want {
			t.Errorf("socket %d: path MTU discovery option = %d (%v), want %d", i, v, err, want)
		}
	}
}

// TestStopWakesBlockedReaders: the UDP readers block in recvmmsg outside Go's poller, so
// stopping must wake each of them (idle ones too) and give the port back.
func TestStopWakesBlockedReaders(t *testing.T) {
	s, _ := newTestServer(t)
	s.cfg.UDPListeners = 3
	if err := services.StartAndAwaitRunning(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	if r, err := dns.Exchange(query("api.example.net.", dns.TypeA, ""), addr); err != nil || len(r.Answer) != 1 {
		t.Fatalf("before stop: %v %v", r, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := services.StopAndAwaitTerminated(ctx, s); err != nil {
		t.Fatalf("stop with readers blocked in recvmmsg: %v", err)
	}
	c, err := net.ListenPacket("udp", addr) // no SO_REUSEPORT: fails while any of our sockets is open
	if err != nil {
		t.Fatalf("port still held after stop: %v", err)
	}
	c.Close()
}

// TestTCPPortTakenFailsCleanly: an explicit port whose TCP side is taken fails start with
// the bind error and leaves no UDP socket behind. (With port 0 the same error makes start
// pick another port; no test can make the kernel's pick collide on demand.)
func TestTCPPortTakenFailsCleanly(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, _ := newTestServer(t)
	s.cfg.Listen = l.Addr().String()
	err = services.StartAndAwaitRunning(context.Background(), s)
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("start on a taken TCP port: %v, want EADDRINUSE", err)
	}
	c, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		t.Fatalf("UDP port still held after the failed start: %v", err)
	}
	c.Close()
}

// TestTCPConnectionsAreBounded: clients that open connections and send nothing hold at
// most max_tcp_connections; the next client waits until the server closes an idle one
// (2 s before a first query), then is answered.
func TestTCPConnectionsAreBounded(t *testing.T) {
	_, _, addr := startServer(t) // MaxTCPConns: 4
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	c := &dns.Client{Net: "tcp", Timeout: 500 * time.Millisecond}
	if r, _, err := c.Exchange(query("api.example.net.", dns.TypeA, ""), addr); err == nil {
		t.Fatalf("a fifth connection was served while four were open: %v", r)
	}
	c.Timeout = 10 * time.Second
	if r, _, err := c.Exchange(query("api.example.net.", dns.TypeA, ""), addr); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("once the idle connections were closed: %v, %v", r, err)
	}
}

// TestSwapOverTheWire: after Swap, queries over UDP (the fast path, whose readers cached
// the old table's service names and client locations) and TCP answer from the new
// table: an added service answers, a removed one is NXDOMAIN, and a client subnet
// located before is located in its new region.
func TestSwapOverTheWire(t *testing.T) {
	s, _, addr := startServer(t)
	exchange := func(c *dns.Client, name, ecs string) *dns.Msg {
		t.Helper()
		r, _, err := c.Exchange(query(name, dns.TypeA, ecs), addr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	udp, tcp := &dns.Client{}, &dns.Client{Net: "tcp"}
	const se = "89.160.20.128/25" // SE in the test database: no region before the swap
	for _, c := range []*dns.Client{udp, tcp} {
		if r := exchange(c, "api.example.net.", se); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.1.2" {
			t.Fatalf("%s before the swap: %v, want the default region's 127.0.1.2", c.Net, r)
		}
	}
	old := s.Table()
	z, err := old.Zone.WithServices([]string{"new.example.net."})
	if err != nil {
		t.Fatal(err)
	}
	l, err := old.Locator.WithRegions([]inventory.ClientRegion{{Name: "france", Countries: []string{"FR", "SE"}}})
	if err != nil {
		t.Fatal(err)
	}
	s.Swap(Table{Zone: z, Locator: l})
	for _, c := range []*dns.Client{udp, tcp} {
		if r := exchange(c, "api.example.net.", se); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].(*dns.SOA).Serial != z.SOA().Serial {
			t.Errorf("%s: removed service: %v, want NXDOMAIN with the new zone's SOA", c.Net, r)
		}
		r := exchange(c, "new.example.net.", se)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.1.1" {
			t.Errorf("%s: added service for a client moved to france: %v, want 127.0.1.1", c.Net, r)
		}
	}
}
