package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// popServer is one POP's HTTP health endpoint on its own loopback address. It answers
// after the round trip between the asking vantage and the POP; a failed POP closes its
// listener, so probes see connection refused, as from a dead VIP. The lab has no TCP or
// ICMP targets: a TCP handshake or an echo on loopback cannot be delayed without netem,
// and undelayed they would tell steering every POP is next door.
type popServer struct {
	name     string
	addr     netip.Addr
	httpPort int
	delay    func(src netip.Addr) time.Duration

	mu   sync.Mutex
	http *http.Server
}

func (p *popServer) healthURL() string {
	return fmt.Sprintf("http://%s/healthz", netip.AddrPortFrom(p.addr, uint16(p.httpPort)))
}

// up opens the listener, on the port it had before when there was one.
func (p *popServer) up() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.http != nil {
		return nil
	}
	hl, err := net.Listen("tcp", netip.AddrPortFrom(p.addr, uint16(p.httpPort)).String())
	if err != nil {
		return fmt.Errorf("lab: POP %s HTTP: %w", p.name, err)
	}
	p.httpPort = hl.Addr().(*net.TCPAddr).Port
	p.http = &http.Server{Handler: http.HandlerFunc(p.serveHealth), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.http.Serve(hl) }()
	return nil
}

// down closes the listener and every open connection.
func (p *popServer) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.http == nil {
		return
	}
	_ = p.http.Close()
	p.http = nil
}

func (p *popServer) serveHealth(w http.ResponseWriter, r *http.Request) {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		select {
		case <-time.After(p.delay(ap.Addr().Unmap())):
		case <-r.Context().Done():
			return
		}
	}
	fmt.Fprintf(w, "ok %s\n", p.name)
}

// startPOPs opens every POP's endpoints and keeps them following the state.
func (l *Lab) startPOPs(ctx context.Context) error {
	vantageSite := map[netip.Addr]string{}
	for i, s := range siteNames(l.inv) {
		vantageSite[vantageAddr(i)] = s
	}
	for i := range l.inv.POPs {
		pop := &l.inv.POPs[i]
		p := &popServer{name: pop.Name, addr: pop.VIPs[0]}
		site := pop.Site
		p.delay = func(src netip.Addr) time.Duration {
			v, ok := vantageSite[src]
			if !ok {
				return 0
			}
			return time.Duration(RTT(l.inv, v, site) * float64(time.Millisecond))
		}
		if err := p.up(); err != nil {
			return err
		}
		pop.HealthURL = p.healthURL()
		l.pops[pop.Name] = p
	}
	l.state.onChange = append(l.state.onChange, func(f Failure, failed bool) {
		p := l.pops[f.Target]
		if f.Kind != "pop" || p == nil {
			return
		}
		if failed {
			p.down()
			return
		}
		if err := p.up(); err != nil {
			l.log.Error("lab: POP did not come back", "pop", p.name, "err", err)
		}
	})
	go func() {
		<-ctx.Done()
		for _, p := range l.pops {
			p.down()
		}
	}()
	return nil
}

// VantageAddr is the loopback source address the named site probes from.
func (l *Lab) VantageAddr(site string) (netip.Addr, bool) {
	for i, s := range siteNames(l.inv) {
		if s == site {
			return vantageAddr(i), true
		}
	}
	return netip.Addr{}, false
}
