package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/internal/jsonbody"
)

// Bounds of `meridian lab load`: a generator is a load, not a benchmark of the machine.
const (
	maxLoadRate     = 2000
	maxLoadDuration = time.Hour
	minInFlight     = 64
	// A session waits this long at most for the GeoDNS's answer, then for the front door's.
	dnsTimeout  = time.Second
	httpTimeout = 2 * time.Second
)

// LoadRequest asks for Rate new sessions per second from the clients of Region to
// Service (default www), for Duration (default 5m), through the POPs Meridian's GeoDNS
// steers the region to.
type LoadRequest struct {
	Region   string        `json:"region"`
	Service  string        `json:"service"`
	Rate     int           `json:"rate"`
	Duration time.Duration `json:"duration"`
}

// loads are the running generators, one per region: a new request replaces the region's.
type loads struct {
	mu      sync.Mutex
	running map[string]*generator
}

// generator is one region's load: its stop, and what it did.
type generator struct {
	stop                   context.CancelFunc
	sent, noSlot, noAnswer atomic.Int64
}

// LoadCounts is what a region's generator did since it started: sessions it sent to a
// front door, and those it owed but did not send, finding no free slot or no front door
// in the GeoDNS's answer.
type LoadCounts struct {
	Sent, NoSlot, NoAnswer int64
}

// LoadCounts is what the region's running generator did; zero when none runs.
func (l *Lab) LoadCounts(region string) LoadCounts {
	l.loads.mu.Lock()
	g := l.loads.running[region]
	l.loads.mu.Unlock()
	if g == nil {
		return LoadCounts{}
	}
	return LoadCounts{Sent: g.sent.Load(), NoSlot: g.noSlot.Load(), NoAnswer: g.noAnswer.Load()}
}

// UseDNS is where the lab's load generator asks Meridian's GeoDNS (host:port).
func (l *Lab) UseDNS(addr string) { l.dns = addr }

// Load starts (or replaces, or with rate 0 stops) the region's generator. Each session is
// a client that has cached nothing: it asks the GeoDNS for the service with the region's
// sample prefix as client subnet and opens a new connection to the answered POP's front
// door, so the load splits by the weights as a large client population's would.
func (l *Lab) Load(req LoadRequest) error {
	region, ok := l.region(req.Region)
	if !ok {
		return fmt.Errorf("unknown region %q", req.Region)
	}
	if req.Service == "" {
		req.Service = "www"
	}
	if req.Duration <= 0 {
		req.Duration = 5 * time.Minute
	}
	switch {
	case req.Rate < 0 || req.Rate > maxLoadRate:
		return fmt.Errorf("rate %d: must be 0 to %d sessions/s", req.Rate, maxLoadRate)
	case req.Duration > maxLoadDuration:
		return fmt.Errorf("duration %s: at most %s", req.Duration, maxLoadDuration)
	case l.dns == "":
		return fmt.Errorf("no GeoDNS to ask")
	}
	l.loads.mu.Lock()
	defer l.loads.mu.Unlock()
	if g := l.loads.running[req.Region]; g != nil {
		g.stop()
		delete(l.loads.running, req.Region)
	}
	if req.Rate == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(l.ctx, req.Duration)
	if l.loads.running == nil {
		l.loads.running = map[string]*generator{}
	}
	g := &generator{stop: cancel}
	l.loads.running[req.Region] = g
	name := dns.Fqdn(req.Service + "." + Zone)
	l.log.Info("lab: load", "region", req.Region, "service", name, "rate", req.Rate, "duration", req.Duration)
	go l.generate(ctx, g, name, region, req.Rate)
	return nil
}

func (l *Lab) region(name string) (netip.Prefix, bool) {
	for _, r := range l.inv.ClientRegions {
		if r.Name == name {
			return r.SamplePrefix, true
		}
	}
	return netip.Prefix{}, false
}

// generate sends rate sessions a second until ctx ends. Sessions are owed by the clock,
// not by the ticks: a ticker drops the ticks its reader was too busy to take, and a busy
// machine would offer less than asked. At most the sessions of the longest a session
// takes are open (64 at least), so a slow or failed POP cannot make the generator grow,
// and a machine too busy for a second or two delays sessions rather than drop them
// (those that find no slot are dropped).
func (l *Lab) generate(ctx context.Context, g *generator, name string, subnet netip.Prefix, rate int) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: httpTimeout}
	byVIP := map[netip.Addr]string{}
	for _, fd := range l.doors {
		if p, ok := l.inv.POP(fd.POP); ok && len(p.VIPs) > 0 {
			byVIP[p.VIPs[0]] = fd.Address
		}
	}
	slots := make(chan struct{}, max(minInFlight, rate*int((dnsTimeout+httpTimeout)/time.Second)))
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var warned atomic.Int64 // unix second of the last DNS warning: one a second at most
	session := func() {
		defer func() { <-slots }()
		addr, err := l.resolve(ctx, name, subnet, byVIP)
		if err != nil {
			g.noAnswer.Add(1)
			if now := time.Now().Unix(); warned.Swap(now) != now {
				l.log.Warn("lab: load: GeoDNS", "service", name, "err", err)
			}
			return
		}
		g.sent.Add(1)
		if resp, err := client.Get("http://" + addr + "/"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	start := time.Now()
	for owed := int64(0); ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for due := int64(time.Since(start).Seconds() * float64(rate)); owed < due; owed++ {
			select {
			case slots <- struct{}{}:
				go session()
			default:
				g.noSlot.Add(1)
			}
		}
	}
}

// resolve asks the GeoDNS for name as a client in subnet, and returns the front door of
// the POP it answers.
func (l *Lab) resolve(ctx context.Context, name string, subnet netip.Prefix, byVIP map[netip.Addr]string) (string, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	opt.Option = append(opt.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(subnet.Bits()), Address: subnet.Addr().AsSlice()})
	m.Extra = append(m.Extra, opt)
	c := &dns.Client{Timeout: dnsTimeout}
	r, _, err := c.ExchangeContext(ctx, m, l.dns)
	if err != nil {
		return "", err
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok && byVIP[ip] != "" {
				return byVIP[ip], nil
			}
		}
	}
	return "", fmt.Errorf("%s for %s: no lab POP in the answer (%s)", name, subnet, dns.RcodeToString[r.Rcode])
}

func (l *Lab) serveLoad(w http.ResponseWriter, r *http.Request) {
	var req LoadRequest
	if err := jsonbody.DecodeRequest(w, r, 4096, &req); err != nil {
		http.Error(w, "lab load: bad request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := l.Load(req); err != nil {
		http.Error(w, "lab load: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "load %s %d/s for %s\n", req.Region, req.Rate, req.Duration)
}
