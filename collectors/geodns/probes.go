package geodns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/meridianhq/meridian/pipeline"
)

// probeDNS asks the authoritative server for name as a client inside subnet would
// (EDNS Client Subnet) and maps the answer back to a POP through popOf.
func probeDNS(ctx context.Context, d *net.Dialer, server, name string, qtype uint16, subnet netip.Prefix, popOf func(netip.Addr) (string, bool)) pipeline.Probe {
	p := pipeline.Probe{Method: "dns", Target: name}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = false
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	opt.SetUDPSize(1232)
	if subnet.IsValid() {
		family := uint16(1)
		if subnet.Addr().Is6() {
			family = 2
		}
		opt.Option = append(opt.Option, &dns.EDNS0_SUBNET{
			Code: dns.EDNS0SUBNET, Family: family, SourceNetmask: uint8(subnet.Bits()),
			Address: subnet.Masked().Addr().AsSlice(),
		})
	}
	m.Extra = append(m.Extra, opt)
	c := &dns.Client{Net: "udp", UDPSize: 1232, Dialer: d}
	r, rtt, err := c.ExchangeContext(ctx, m, server)
	p.RTT = rtt
	if err != nil {
		p.Error = err.Error()
		return p
	}
	p.Rcode = dns.RcodeToString[r.Rcode]
	var answers []string
	for _, rr := range r.Answer {
		var a net.IP
		switch v := rr.(type) {
		case *dns.A:
			a = v.A
		case *dns.AAAA:
			a = v.AAAA
		default:
			continue
		}
		addr, _ := netip.AddrFromSlice(a)
		addr = addr.Unmap()
		answers = append(answers, addr.String())
		if pop, ok := popOf(addr); ok && p.POP == "" {
			p.POP = pop
		}
	}
	p.Answer = strings.Join(answers, ",")
	p.Success = r.Rcode == dns.RcodeSuccess && len(answers) > 0
	if !p.Success && p.Error == "" {
		p.Error = fmt.Sprintf("rcode %s, %d addresses", p.Rcode, len(answers))
	}
	return p
}

// probeTCP measures the TCP handshake to addr.
func probeTCP(ctx context.Context, d *net.Dialer, addr string) pipeline.Probe {
	p := pipeline.Probe{Method: "tcp", Target: addr}
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", addr)
	p.RTT = time.Since(start)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	conn.Close()
	p.Success = true
	return p
}

// probeHTTP measures time to first response byte on a fresh connection, so that a POP
// whose accept queue is stuck is seen as such rather than hidden behind a pooled
// connection. A 5xx status counts as a failure.
func probeHTTP(ctx context.Context, client *http.Client, url string) pipeline.Probe {
	p := pipeline.Probe{Method: "http", Target: url}
	var start, first time.Time
	trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, url, nil)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	start = time.Now()
	resp, err := client.Do(req)
	if err != nil {
		p.RTT = time.Since(start)
		p.Error = err.Error()
		return p
	}
	resp.Body.Close()
	p.RTT = first.Sub(start)
	p.Answer = strconv.Itoa(resp.StatusCode)
	p.Success = resp.StatusCode < 500
	if !p.Success {
		p.Error = "status " + resp.Status
	}
	return p
}

// errICMPNotPermitted says that neither a raw nor an unprivileged ICMP socket is allowed.
var errICMPNotPermitted = errors.New("icmp echo not permitted: needs root (CAP_NET_RAW) or net.ipv4.ping_group_range covering this group")

var icmpSeq atomic.Uint32

// icmpSocket opens a raw ICMP socket when root, else an unprivileged "ping" socket.
func icmpSocket(v6 bool) (*icmp.PacketConn, bool, error) {
	raw, dgram, addr := "ip4:icmp", "udp4", "0.0.0.0"
	if v6 {
		raw, dgram, addr = "ip6:ipv6-icmp", "udp6", "::"
	}
	if c, err := icmp.ListenPacket(raw, addr); err == nil {
		return c, true, nil
	}
	if c, err := icmp.ListenPacket(dgram, addr); err == nil {
		return c, false, nil
	}
	return nil, false, errICMPNotPermitted
}

// probeICMP sends one echo request to addr and waits for its reply.
func probeICMP(ctx context.Context, addr netip.Addr) pipeline.Probe {
	p := pipeline.Probe{Method: "icmp", Target: addr.String()}
	conn, raw, err := icmpSocket(addr.Is6())
	if err != nil {
		p.Error = err.Error()
		return p
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	id, seq := os.Getpid()&0xffff, int(icmpSeq.Add(1)&0xffff)
	var typ, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	proto := 1
	if addr.Is6() {
		typ, replyType, proto = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58
	}
	body, _ := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("meridian")}}).Marshal(nil)
	var dst net.Addr = &net.IPAddr{IP: addr.AsSlice()}
	if !raw {
		dst = &net.UDPAddr{IP: addr.AsSlice()}
	}
	start := time.Now()
	if _, err := conn.WriteTo(body, dst); err != nil {
		p.Error = err.Error()
		return p
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			p.RTT = time.Since(start)
			p.Error = err.Error()
			return p
		}
		msg, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || msg.Type != replyType {
			continue
		}
		// Unprivileged sockets rewrite the ID; the sequence number still identifies ours.
		if echo, ok := msg.Body.(*icmp.Echo); ok && echo.Seq == seq && (!raw || echo.ID == id) {
			p.RTT = time.Since(start)
			p.Success = true
			return p
		}
	}
}
