package haproxy

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/collectors/scrape"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// The captures in testdata are Debian bookworm's HAProxy 2.6.12 in front of one live
// server (s1) and one down (s2), after 20 good requests and 20 that got 404.

func TestParseExporterAndShowStatAgree(t *testing.T) {
	exp, err := os.ReadFile("testdata/exporter-2.6.12.txt")
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile("testdata/show-stat-2.6.12.csv")
	if err != nil {
		t.Fatal(err)
	}
	a, errs := ParseExposition("exporter", exp)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	b, errs := ParseStat("socket", stat)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	fe, be := Key{"frontend", "api", ""}, Key{"backend", "pop", ""}
	s1, s2 := Key{"server", "pop", "s1"}, Key{"server", "pop", "s2"}
	for name, snap := range map[string]Snapshot{"exporter": a, "show stat": b} {
		for _, k := range []Key{fe, be, s1, s2} {
			if snap[k] == nil {
				t.Fatalf("%s: no %+v", name, k)
			}
		}
		if r := snap[fe]; r.HTTP4xx != 20 || r.SessionMax != 9984 || r.BytesIn != 3360 {
			t.Errorf("%s: frontend api = %+v, want 20 4xx, limit 9984, 3360 bytes in", name, r)
		}
		if r := snap[s1]; r.Status != "UP" || r.CheckStatus != "L4OK" {
			t.Errorf("%s: s1 = %s/%s, want UP/L4OK", name, r.Status, r.CheckStatus)
		}
		if r := snap[s2]; r.Status != "DOWN" || r.CheckStatus != "L4CON" {
			t.Errorf("%s: s2 = %s/%s, want DOWN/L4CON", name, r.Status, r.CheckStatus)
		}
	}
	// The two sources were read a moment apart (the exporter's own scrape is a session of
	// its frontend), so compare what does not move between them.
	if a[fe].HTTP4xx != b[fe].HTTP4xx || a[be].BytesOut != b[be].BytesOut || a[s1].SessionsTotal != b[s1].SessionsTotal {
		t.Errorf("exporter and show stat differ: %+v / %+v", a[be], b[be])
	}
}

// A malformed line in either source is an error naming the source and line; the rows
// beside it are kept.
func TestBadInputKeepsGoodRows(t *testing.T) {
	exp := "haproxy_frontend_sessions_total{proxy=\"api\"} 10\n" +
		"haproxy_frontend_bytes_out_total{proxy=\"api\" 99\n" +
		"haproxy_server_status{proxy=\"pop\",server=\"s1\",state=\"UP\"} 1\n"
	snap, errs := ParseExposition("http://lon-fd-1/metrics", []byte(exp))
	var le *scrape.LineError
	if len(errs) != 1 || !errors.As(errs[0], &le) || le.Line != 2 || !strings.Contains(errs[0].Error(), "http://lon-fd-1/metrics:2") {
		t.Fatalf("errors %v, want one at http://lon-fd-1/metrics:2", errs)
	}
	if snap[Key{"frontend", "api", ""}].SessionsTotal != 10 || snap[Key{"server", "pop", "s1"}].Status != "UP" {
		t.Errorf("good lines lost: %+v", snap)
	}

	stat := "# pxname,svname,scur,stot,bin,bout,status,type,\n" +
		"api,FRONTEND,1,10,100,200,OPEN,0,\n" +
		"pop,s1,1,x,100,200,UP,2,\n" +
		"pop,BACKEND,1,10,100,200,UP,1,\n"
	snap, errs = ParseStat("unix:/run/haproxy.sock", []byte(stat))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "unix:/run/haproxy.sock:3: column stot") {
		t.Fatalf("errors %v, want one naming unix:/run/haproxy.sock:3 and column stot", errs)
	}
	if len(snap) != 2 || snap[Key{"backend", "pop", ""}] == nil {
		t.Errorf("rows %v, want the frontend and the backend", snap)
	}
	if _, errs := ParseStat("unix:/x", []byte("<html>")); len(errs) != 1 {
		t.Errorf("not show stat: %v", errs)
	}
}

// Rates come from two readings; a counter that went down (a restart) is a rate of 0;
// utilisation is against the POP's capacity, for the frontends named (or all).
func TestRecordsRatesAndUtilisation(t *testing.T) {
	t0 := time.Now()
	fe, other := Key{"frontend", "api", ""}, Key{"frontend", "stats", ""}
	prev := reading{at: t0, snap: Snapshot{fe: {SessionsTotal: 100, BytesOut: 1e6, HTTP5xx: 50}, other: {SessionsTotal: 5}}}
	cur := Snapshot{fe: {SessionsTotal: 600, BytesOut: 3e6, HTTP5xx: 10}, other: {SessionsTotal: 10}}
	inv := &inventory.Inventory{POPs: []inventory.POP{{Name: "lon", Site: "london", Capacity: inventory.Capacity{SessionsPerSecond: 1000, Bandwidth: 1e6}}}}
	tg := Target{POP: "lon", Node: "lon-fd-1", Frontends: []string{"api"}}
	recs := Records(cur, prev, t0.Add(5*time.Second), tg, mapTarget(inventory.Static(inv).Snapshot(), tg))
	got := map[string]*pipeline.HAProxyStat{}
	for _, r := range recs {
		got[r.(*pipeline.HAProxyStat).Proxy] = r.(*pipeline.HAProxyStat)
	}
	api := got["api"]
	if api.SessionRate != 100 || api.BytesOut != 4e5 || api.HTTP5xx != 0 || api.M.Site != "london" {
		t.Errorf("api: %+v, want 100 sessions/s, 4e5 B/s out, 0 5xx/s (reset), site london", api)
	}
	if api.Utilisation != 0.4 { // bandwidth 4e5/1e6 beats sessions 100/1000
		t.Errorf("api utilisation %v, want 0.4", api.Utilisation)
	}
	if got["stats"].Utilisation != 0 {
		t.Errorf("stats frontend is not a counted frontend, utilisation %v", got["stats"].Utilisation)
	}
}

// Any input parses without a panic, and what parses turns into records.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/exporter-2.6.12.txt", "testdata/show-stat-2.6.12.csv"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("# pxname,svname,type,scur,stot,bin,bout,status\n\"a,b\",c,2,NaN,1e400,-1,UP\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, _ := ParseExposition("fuzz", b)
		s, _ := ParseStat("fuzz", b)
		Records(a, reading{snap: s}, time.Now(), Target{POP: "p", Node: "n"}, place{})
	})
}
