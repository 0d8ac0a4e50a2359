package steering

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/steering/rfc2136"
)

// knot is a real Knot DNS server taking TSIG-signed updates for example.net.
type knot struct {
	addr   string
	secret string // base64, from keymgr
}

func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startKnot(t *testing.T) *knot {
	t.Helper()
	knotd := needBinary(t, "knotd", "knot")
	out, err := exec.Command(needBinary(t, "keymgr", "knot"), "-t", "meridian", "hmac-sha256").Output()
	if err != nil {
		t.Fatalf("keymgr: %v", err)
	}
	m := regexp.MustCompile(`secret: (\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no secret in keymgr output")
	}
	k := &knot{addr: freeLoopbackPort(t), secret: string(m[1])}
	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(k.addr)
	conf := fmt.Sprintf(`server:
    listen: %s@%s
    rundir: %[3]s
database:
    storage: %[3]s
log:
  - target: stderr
    any: info
key:
  - id: meridian
    algorithm: hmac-sha256
    secret: %[4]s
acl:
  - id: update
    key: meridian
    action: update
zone:
  - domain: example.net
    storage: %[3]s
    file: example.net.zone
    acl: update
`, host, port, dir, k.secret)
	zone := "$ORIGIN example.net.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 30\n@ NS ns1\nns1 A 127.0.0.53\n"
	if err := os.WriteFile(filepath.Join(dir, "knot.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "example.net.zone"), []byte(zone), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(knotd, "-c", filepath.Join(dir, "knot.conf"))
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("knotd log:\n%s", logs.String())
		}
	})
	wait.Until(t, 10*time.Second, "knotd to serve example.net", func() bool {
		r, err := dns.Exchange(question("example.net.", dns.TypeSOA), k.addr)
		return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1
	})
	return k
}

func question(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// knotA returns the sorted A addresses Knot serves for name.
func knotA(t testing.TB, addr, name string) []string {
	r, err := dns.Exchange(question(name, dns.TypeA), addr)
	if err != nil {
		t.Fatalf("query knot %s: %v", name, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

// config is an RFC 2136 configuration that updates k's zone, its TSIG secret in a file,
// synced only when a test asks.
func (k *knot) config(t *testing.T) rfc2136.Config {
	secretFile := filepath.Join(t.TempDir(), "tsig")
	if err := os.WriteFile(secretFile, []byte(k.secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return rfc2136.Config{Server: k.addr, Zone: "example.net.", KeyName: "meridian", KeyAlgorithm: "hmac-sha256",
		KeySecretFile: secretFile, Interval: time.Hour, Resync: time.Hour, TTL: 30, Timeout: 3 * time.Second}
}

func TestRFC2136ToKnot(t *testing.T) {
	k := startKnot(t)
	cfg := testConfig(t)
	cfg.RFC2136 = k.config(t)
	st, err := New(cfg, Deps{Inventory: testInventory(), Appender: &recorder{}, Logger: discard(), Registerer: newTestRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Publisher.Sync(ctx); err != nil {
		t.Fatalf("first sync: %v", err)
	}
	for name, want := range map[string][]string{
		"france.api.example.net.": {"127.0.1.1"},
		"uk.api.example.net.":     {"127.0.1.3"},
		"sweden.api.example.net.": {"127.0.1.1"},
		"api.example.net.":        {"127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"},
	} {
		if got := knotA(t, k.addr, name); !slices.Equal(got, want) {
			t.Errorf("knot serves %s = %v, want %v", name, got, want)
		}
	}

	// A drain moves France's published set on the next sync; other names are untouched.
	if _, err := st.overrides.add(Override{Action: "drain", POP: "nbg", Region: "france", Source: "test"}); err != nil {
		t.Fatal(err)
	}
	st.Tick(ctx)
	if err := st.Publisher.Sync(ctx); err != nil {
		t.Fatalf("sync after drain: %v", err)
	}
	if got := knotA(t, k.addr, "france.api.example.net."); !slices.Equal(got, []string{"127.0.1.2"}) {
		t.Fatalf("after draining nbg for france knot serves %v, want [127.0.1.2]", got)
	}

	// A wrong key is refused by Knot and nothing changes.
	os.WriteFile(cfg.RFC2136.KeySecretFile, []byte("d3JvbmcgIGtleSB3cm9uZyBrZXkgd3Jvbmcga2V5IQ==\n"), 0o600)
	bad, err := rfc2136.New(cfg.RFC2136, rfc2136.Deps{Source: st.Engine, Names: rfc2136.Names([]string{service}, []string{"uk"}, DefaultRegion), Logger: discard(), Registerer: newTestRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	st.overrides.add(Override{Action: "drain", POP: "lon", Region: "uk", Source: "test"})
	st.Tick(ctx)
	err = bad.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), "NOTAUTH") {
		t.Fatalf("sync with a wrong key: err %v, want NOTAUTH", err)
	}
	if strings.Contains(err.Error(), "d3Jvbmc") {
		t.Fatal("the TSIG secret leaked into an error message")
	}
	if got := knotA(t, k.addr, "uk.api.example.net."); !slices.Equal(got, []string{"127.0.1.3"}) {
		t.Fatalf("a refused update changed uk.api to %v", got)
	}
}

// TestRFC2136FollowsInventory: names follow the live inventory on a real Knot. A client
// region and a service added get their names created, a removed region's and service's
// names are deleted, and no other name is sent: the update count is exactly the names
// that changed. A change with a name that cannot be one is refused, counted, and
// changes nothing on the server.
func TestRFC2136FollowsInventory(t *testing.T) {
	k := startKnot(t)
	cfg := testConfig(t)
	cfg.RFC2136 = k.config(t)
	inv := testInventory()
	live := inventory.Static(inv)
	reg := newTestRegistry()
	st, err := New(cfg, Deps{Inventory: inv, Live: live, Appender: &recorder{}, Logger: discard(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// change applies a new inventory as the running module would (one tick), then syncs,
	// and returns the updates sent.
	change := func(f func(*inventory.Inventory)) int {
		t.Helper()
		inv = changeInventory(inv, f)
		if err := live.Set(inventory.SourceYAML, *inv); err != nil {
			t.Fatal(err)
		}
		st.Tick(ctx)
		before := promtest.Sum(t, reg, "meridian_steering_rfc2136_updates_total")
		if err := st.Publisher.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return int(promtest.Sum(t, reg, "meridian_steering_rfc2136_updates_total") - before)
	}
	rcode := func(name string) int {
		r, err := dns.Exchange(question(name, dns.TypeA), k.addr)
		if err != nil {
			t.Fatal(err)
		}
		return r.Rcode
	}
	if err := st.Publisher.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	const img = "img.example.net."
	n := change(func(inv *inventory.Inventory) {
		inv.ClientRegions = append(slices.DeleteFunc(inv.ClientRegions, func(r inventory.ClientRegion) bool { return r.Name == "uk" }),
			inventory.ClientRegion{Name: "japan", CIDRs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Vantage: "tokyo"})
		inv.Services = append(inv.Services, inventory.Service{Name: img, POPs: []string{"nyc", "tyo"}})
	})
	// Created: japan.api, and img for default, france, us, asia, japan (sweden.img has no
	// records: Sweden's residency allows neither of img's POPs); deleted: uk.api.
	if n != 7 {
		t.Errorf("%d updates for 6 names created and 1 deleted, want 7", n)
	}
	for name, want := range map[string][]string{
		"japan.api.example.net.":  {"127.0.1.4"},
		"japan.img.example.net.":  {"127.0.1.4"},
		"france.img.example.net.": {"127.0.1.2"},
		img:                       {"127.0.1.2", "127.0.1.4"},
		"france.api.example.net.": {"127.0.1.1"},
	} {
		if got := knotA(t, k.addr, name); !slices.Equal(got, want) {
			t.Errorf("knot serves %s = %v, want %v", name, got, want)
		}
	}
	if rc := rcode("uk.api.example.net."); rc != dns.RcodeNameError {
		t.Errorf("uk.api after uk's removal: %s, want NXDOMAIN", dns.RcodeToString[rc])
	}
	if err := st.Publisher.Sync(ctx); err != nil || promtest.Sum(t, reg, "meridian_steering_rfc2136_updates_total") != float64(6+n) {
		t.Errorf("a sync with nothing changed sent updates (err %v)", err)
	}

	// Deleted: img's names, sweden.img's empty one included (a deletion is idempotent).
	if n := change(func(inv *inventory.Inventory) { inv.Services = inv.Services[:1] }); n != 6 {
		t.Errorf("%d updates for img's 6 names deleted, want 6", n)
	}
	if rc := rcode(img); rc != dns.RcodeNameError {
		t.Errorf("%s after its removal: %s, want NXDOMAIN", img, dns.RcodeToString[rc])
	}

	// A region whose name is no DNS label: refused whole, the server left alone.
	n = change(func(inv *inventory.Inventory) {
		inv.ClientRegions = append(inv.ClientRegions, inventory.ClientRegion{Name: "north america", Countries: []string{"CA"}})
	})
	if n != 0 || promtest.Sum(t, reg, "meridian_steering_inventory_refused_total", "part", "rfc2136") != 1 {
		t.Errorf("a bad region name: %d updates, refusals %v; want 0 and 1", n, promtest.Sum(t, reg, "meridian_steering_inventory_refused_total", "part", "rfc2136"))
	}
	if got := knotA(t, k.addr, "japan.api.example.net."); !slices.Equal(got, []string{"127.0.1.4"}) {
		t.Errorf("after a refused change knot serves japan.api = %v", got)
	}
}
