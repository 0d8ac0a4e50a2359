package steering

import (
	"context"
	"flag"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/collectors/geodns"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

const geoDB = "../testdata/geoip/GeoIP2-City-Test.mmdb"

// startSteering runs the whole module with the built-in GeoDNS on a free loopback port.
func startSteering(t testing.TB, cfg Config, inv *inventory.Inventory, app pipeline.Appender) (*Steering, string) {
	return startSteeringDeps(t, cfg, Deps{Inventory: inv, Appender: app})
}

// startSteeringDeps is startSteering with any Deps; a nil Logger or Registerer is filled in.
func startSteeringDeps(t testing.TB, cfg Config, d Deps) (*Steering, string) {
	t.Helper()
	cfg.DNS.Listen = "127.0.0.1:0"
	cfg.DNS.GeoIPDB = geoDB
	cfg.DNS.Zone.Origin = "example.net."
	cfg.DNS.UDPListeners = 1
	if d.Logger == nil {
		d.Logger = discard()
	}
	if d.Registerer == nil {
		d.Registerer = newTestRegistry()
	}
	s, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), s) })
	return s, s.DNS.Addr().String()
}

func needBinary(t testing.TB, bin, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (make apt-test)", bin, pkg)
	}
	return p
}

// kdig asks the server like a resolver forwarding a client subnet would.
func kdig(t testing.TB, addr, subnet, name, qtype string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"@" + host, "-p", port, "+norecurse", "+time=2", "+retry=1"}
	if subnet != "" {
		args = append(args, "+subnet="+subnet)
	}
	out, err := exec.Command(needBinary(t, "kdig", "knot-dnsutils"), append(args, name, qtype)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kdig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestKdigGetsRegionalPOP(t *testing.T) {
	_, addr := startSteering(t, testConfig(t), testInventory(), &recorder{})
	for _, tc := range []struct {
		region, subnet, want, scope string
	}{
		{"france (FR, IPv6 ECS)", "2a02:cfc0::/32", "127.0.1.1", "/29"},
		{"uk (GB)", "81.2.69.142/31", "127.0.1.3", "/31"},
		{"us (US)", "216.160.83.56/29", "127.0.1.2", "/29"},
		{"us by CIDR override over a GB address", "81.2.69.160/27", "127.0.1.2", "/27"},
		{"asia (CN by continent)", "175.16.199.0/24", "127.0.1.4", "/24"},
		{"sweden (SE, residency nbg)", "89.160.20.128/25", "127.0.1.1", "/25"},
	} {
		out := kdig(t, addr, tc.subnet, service, "A")
		if !strings.Contains(out, "NOERROR") || !strings.Contains(out, "\t"+tc.want+"\n") {
			t.Errorf("%s: kdig +subnet=%s got\n%s\nwant A %s", tc.region, tc.subnet, out, tc.want)
		}
		if !strings.Contains(out, "CLIENT-SUBNET: "+tc.subnet+tc.scope) {
			t.Errorf("%s: ECS scope missing or wrong, want %s%s in\n%s", tc.region, tc.subnet, tc.scope, out)
		}
		if !strings.Contains(out, "Flags: qr aa;") {
			t.Errorf("%s: want flags qr aa only (authoritative, no recursion), got\n%s", tc.region, out)
		}
	}
	if out := kdig(t, addr, "", "www.example.org", "A"); !strings.Contains(out, "REFUSED") {
		t.Errorf("name outside the zone: want REFUSED, got\n%s", out)
	}
	if out := kdig(t, addr, "", "missing.example.net", "A"); !strings.Contains(out, "NXDOMAIN") || !strings.Contains(out, "SOA") {
		t.Errorf("missing name: want NXDOMAIN with SOA, got\n%s", out)
	}
	if out := kdig(t, addr, "2a02:cfc0::/32", service, "AAAA"); !strings.Contains(out, "2001:db8::1") {
		t.Errorf("france AAAA: want 2001:db8::1, got\n%s", out)
	}
}

// popServer is one POP's health endpoint on its own loopback VIP; it can be stopped
// and started again on the same address.
type popServer struct {
	srv  *http.Server
	addr string
}

func startPOP(t testing.TB, ip netip.Addr) *popServer {
	t.Helper()
	p := &popServer{addr: netip.AddrPortFrom(ip, 0).String()}
	p.start(t)
	t.Cleanup(p.stop)
	return p
}

func (p *popServer) start(t testing.TB) {
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })}
	go p.srv.Serve(l)
}

func (p *popServer) stop() { p.srv.Close() }

// answer asks the server for service's A record as a client inside subnet.
func answer(t testing.TB, addr, subnet string) string {
	r := ask(t, addr, service, subnet)
	if r == nil || len(r.Answer) == 0 {
		return ""
	}
	return r.Answer[0].(*dns.A).A.String()
}

// ask asks the server for name's A record as a client inside subnet, over UDP with a
// miekg/dns client; nil when no reply came.
func ask(t testing.TB, addr, name, subnet string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	p := netip.MustParsePrefix(subnet)
	fam := uint16(1)
	if p.Addr().Is6() {
		fam = 2
	}
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: fam, SourceNetmask: uint8(p.Bits()), Address: p.Addr().AsSlice()})
	r, err := dns.Exchange(m, addr)
	if err != nil {
		return nil
	}
	return r
}

// TestFailoverOnLoopback runs the whole loop: the prober probes POP health endpoints on
// loopback VIPs, its records reach the engine as the pipeline fans them out, and the
// built-in GeoDNS answers move when a POP stops.
func TestFailoverOnLoopback(t *testing.T) {
	inv := testInventory()
	pops := map[string]*popServer{}
	for i := range inv.POPs {
		p := &inv.POPs[i]
		pops[p.Name] = startPOP(t, p.VIPs[0])
		p.TCPAddr = pops[p.Name].addr
		p.HealthURL = "http://" + pops[p.Name].addr + "/healthz"
	}
	rec := &recorder{}
	st, addr := startSteering(t, testConfig(t), inv, rec)
	rec.mu.Lock()
	rec.consumer = st
	rec.mu.Unlock()

	var pcfg geodns.Config
	pcfg.RegisterFlags(flag.NewFlagSet("probe", flag.PanicOnError))
	pcfg.Vantages, pcfg.DNSServer, pcfg.ICMP = geodns.Vantages{{Site: "lab"}}, addr, false
	prober, err := geodns.New(pcfg, geodns.Deps{Logger: discard(), Registerer: newTestRegistry(), Appender: rec, Inventory: inventory.Static(inv)})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), prober); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), prober) })

	france, sweden := "2a02:cfc0::/32", "89.160.20.128/25"
	wait.Until(t, 10*time.Second, "every POP probed healthy", func() bool {
		return len(prober.Matrix().Cells(time.Time{})) == len(inv.POPs)
	})
	if got := answer(t, addr, france); got != "127.0.1.1" {
		t.Fatalf("france answered %q before the failure, want nbg 127.0.1.1", got)
	}

	stopped := time.Now()
	pops["nbg"].stop()
	wait.Until(t, 15*time.Second, "france answers to move to nyc", func() bool { return answer(t, addr, france) == "127.0.1.2" })
	t.Logf("stop -> changed answer: %v (probe interval %v, fail threshold %d)", time.Since(stopped).Round(time.Millisecond), pcfg.Interval, testConfig(t).FailThreshold)

	// Sweden may only be served from nbg: it keeps nbg (fail-open inside its allowed set).
	for range 50 {
		if got := answer(t, addr, sweden); got != "127.0.1.1" {
			t.Fatalf("sweden answered %q with its only allowed POP down, want 127.0.1.1", got)
		}
	}
	for _, d := range rec.decisions() {
		if d.ClientRegion == "sweden" && d.POP != "nbg" && d.NewWeight > 0 {
			t.Fatalf("residency broken: %+v", d)
		}
	}
	// The loop closes: DNS probes from the vantage see France answered by nyc.
	wait.Until(t, 5*time.Second, "a DNS probe seeing france -> nyc", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return slices.ContainsFunc(rec.recs, func(r pipeline.Record) bool {
			p, ok := r.(*pipeline.Probe)
			return ok && p.Method == "dns" && p.ClientRegion == "france" && p.POP == "nyc" && p.Rcode == "NOERROR"
		})
	})
}
