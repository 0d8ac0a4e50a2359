package lab

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/meridianhq/meridian/collectors/haproxy"
)

// sessionsThrough opens n sessions through a front door and returns the frontend's
// sessions_total its exporter then reports, as collectors/haproxy parses it.
func sessionsThrough(t *testing.T, fd FrontDoor, n int) float64 {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range n {
		resp, err := c.Get("http://" + fd.Address + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok "+fd.POP+"\n" {
			t.Fatalf("%s front door answered %d %q", fd.POP, resp.StatusCode, b)
		}
	}
	resp, err := http.Get(fd.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	snap, errs := haproxy.ParseExposition(fd.Metrics, b)
	if len(errs) > 0 {
		t.Fatalf("%s exporter: %v", fd.POP, errs)
	}
	r := snap[haproxy.Key{Type: "frontend", Proxy: fd.Frontend}]
	if r == nil {
		t.Fatalf("%s exporter has no frontend %q", fd.POP, fd.Frontend)
	}
	return r.SessionsTotal
}

// Every lab POP has a capacity and a front door on its VIP that passes sessions to the
// POP's endpoint and counts them in its exporter: Debian's haproxy when it is installed.
func TestFrontDoorsCountSessions(t *testing.T) {
	_, lookErr := exec.LookPath("haproxy")
	l := startLab(t)
	doors := l.Endpoints().FrontDoors
	if len(doors) != len(l.inv.POPs) {
		t.Fatalf("%d front doors for %d POPs", len(doors), len(l.inv.POPs))
	}
	for _, fd := range doors {
		if fd.HAProxy != (lookErr == nil) {
			t.Errorf("%s: real HAProxy %v with haproxy on the PATH %v", fd.POP, fd.HAProxy, lookErr == nil)
		}
		p, _ := l.inv.POP(fd.POP)
		if p.Capacity.SessionsPerSecond != labCapacity {
			t.Errorf("%s capacity %v", fd.POP, p.Capacity)
		}
		if ap := netip.MustParseAddrPort(fd.Address); ap.Addr() != p.VIPs[0] {
			t.Errorf("%s front door on %s, not its VIP %s", fd.POP, fd.Address, p.VIPs[0])
		}
		if got := sessionsThrough(t, fd, 5); got != 5 {
			t.Errorf("%s: exporter counts %v sessions after 5", fd.POP, got)
		}
	}
}

// The stand-in, used where haproxy is not installed, counts sessions as HAProxy does.
func TestFrontDoorStandIn(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fd := FrontDoor{POP: "paris", Frontend: frontendName}
	if err := startStandIn(ctx, &fd, netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if got := sessionsThrough(t, fd, 3); got != 3 {
		t.Fatalf("stand-in counts %v sessions after 3", got)
	}
}

// lab load refuses an unknown region and rates out of bounds, naming them.
func TestLoadRefusesBadRequests(t *testing.T) {
	l := startLab(t)
	l.UseDNS("127.0.0.1:1")
	for body, want := range map[string]int{
		`{"region":"atlantis","rate":10}`: http.StatusBadRequest,
		`{"region":"france","rate":5000}`: http.StatusBadRequest,
		`{"region":"france","rate":-1}`:   http.StatusBadRequest,
		`{"region":"france","rate":0}`:    http.StatusOK,
	} {
		if code := control(t, l, "/lab/load", body, "tok"); code != want {
			t.Errorf("%s: %d, want %d", body, code, want)
		}
	}
	if code := control(t, l, "/lab/load", `{"region":"france","rate":10}`, "wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", code)
	}
}
