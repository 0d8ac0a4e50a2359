package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"time"
)

// labCapacity is each lab POP's capacity in new sessions per second: small enough that
// `meridian lab load` on loopback reaches the watermarks, and nothing at rest comes near.
const labCapacity = 100

// frontendName is the frontend that carries a POP's traffic; the exporter's own is not
// counted (collectors/haproxy targets[].frontends).
const frontendName = "pop"

// FrontDoor is one POP's front door: Debian's haproxy when it is installed, a loopback
// stand-in serving the same exporter series otherwise. Probes do not go through it (they
// ask the POP's health endpoint directly), so the calm lab carries no load: only
// `meridian lab load` does.
type FrontDoor struct {
	POP      string `json:"pop"`
	Node     string `json:"node"`     // the HAProxy node, as the collector names it
	Address  string `json:"address"`  // host:port clients open sessions to
	Metrics  string `json:"metrics"`  // the exporter's URL
	Frontend string `json:"frontend"` // the frontend carrying the POP's traffic
	HAProxy  bool   `json:"haproxy"`  // a real HAProxy; false: the stand-in
}

// startFrontDoors puts a front door on each POP's VIP, in front of its endpoint.
func (l *Lab) startFrontDoors(ctx context.Context) error {
	bin, lookErr := exec.LookPath("haproxy")
	var dir string
	if lookErr == nil {
		var err error
		if dir, err = os.MkdirTemp("", "meridian-lab-haproxy-"); err != nil {
			return err
		}
		go func() { <-ctx.Done(); _ = os.RemoveAll(dir) }()
	} else {
		l.log.Info("lab: haproxy not installed, front doors are loopback stand-ins", "err", lookErr)
	}
	for _, pop := range l.inv.POPs {
		p := l.pops[pop.Name]
		fd := FrontDoor{POP: pop.Name, Node: pop.Name + "-fd-1", Frontend: frontendName, HAProxy: lookErr == nil}
		var err error
		if fd.HAProxy {
			err = startHAProxy(ctx, bin, dir, &fd, p.addr, netip.AddrPortFrom(p.addr, uint16(p.httpPort)).String())
		} else {
			err = startStandIn(ctx, &fd, p.addr)
		}
		if err != nil {
			return fmt.Errorf("lab: POP %s front door: %w", pop.Name, err)
		}
		l.doors = append(l.doors, fd)
	}
	return nil
}

// freePort picks a free TCP port on addr for a process that binds it itself.
func freePort(addr netip.Addr) (string, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startHAProxy runs haproxy in the foreground (-db) until ctx ends: the POP's frontend on
// its VIP in front of backend, and the built-in Prometheus exporter.
func startHAProxy(ctx context.Context, bin, dir string, fd *FrontDoor, vip netip.Addr, backend string) error {
	front, err := freePort(vip)
	if err != nil {
		return err
	}
	metrics, err := freePort(vip)
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`global
  maxconn 2000
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend stats
  bind %s
  http-request use-service prometheus-exporter if { path /metrics }
frontend %s
  bind %s
  default_backend endpoint
backend endpoint
  server %s %s
`, metrics, frontendName, front, fd.POP, backend)
	path := filepath.Join(dir, fd.POP+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "-db", "-f", path)
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fd.Address, fd.Metrics = front, "http://"+metrics+"/metrics"
	// Ready when the exporter answers; a haproxy that exits (a port taken meanwhile) fails.
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if resp, err := c.Get(fd.Metrics); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("haproxy exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("haproxy's exporter did not answer within 10s")
}

// startStandIn serves the POP's frontend and the exporter series collectors/haproxy reads
// (status, current sessions, sessions and bytes out counted), when haproxy is not installed.
func startStandIn(ctx context.Context, fd *FrontDoor, vip netip.Addr) error {
	var sessions, current, bytesOut atomic.Int64
	body := []byte("ok " + fd.POP + "\n")
	front := &http.Server{ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			n, _ := w.Write(body)
			bytesOut.Add(int64(n))
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				sessions.Add(1)
				current.Add(1)
			case http.StateClosed, http.StateHijacked:
				current.Add(-1)
			}
		}}
	metrics := &http.Server{ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "haproxy_frontend_status{proxy=%[1]q,state=\"UP\"} 1\nhaproxy_frontend_current_sessions{proxy=%[1]q} %[2]d\nhaproxy_frontend_sessions_total{proxy=%[1]q} %[3]d\nhaproxy_frontend_bytes_out_total{proxy=%[1]q} %[4]d\n",
				frontendName, current.Load(), sessions.Load(), bytesOut.Load())
		})}
	for _, s := range []struct {
		srv  *http.Server
		addr *string
	}{{front, &fd.Address}, {metrics, &fd.Metrics}} {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(vip, 0).String())
		if err != nil {
			return err
		}
		*s.addr = ln.Addr().String()
		go func() { _ = s.srv.Serve(ln) }()
		go func() { <-ctx.Done(); _ = s.srv.Close() }()
	}
	fd.Metrics = "http://" + fd.Metrics + "/metrics"
	return nil
}
