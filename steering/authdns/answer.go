package authdns

import (
	"net"
	"net/netip"

	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/steering/zone"
)

// ednsSize is the UDP payload size we advertise (the DNS flag day 2020 value).
const ednsSize = 1232

// Answer runs the chain for one parsed request from src and returns the response, or nil
// when the request must be dropped (it is itself a response: answering could loop).
func (s *Server) Answer(req *dns.Msg, src netip.Addr, udp bool) *dns.Msg {
	if req.Response {
		return nil
	}
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = false
	reqOpt := req.IsEdns0()
	if reqOpt != nil {
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		opt.SetUDPSize(ednsSize)
		resp.Extra = append(resp.Extra, opt)
		if reqOpt.Version() != 0 {
			resp.Authoritative = false
			resp.Rcode = dns.RcodeBadVers // RFC 6891 6.1.3
			return resp
		}
	}
	if req.Opcode != dns.OpcodeQuery {
		return s.fail(resp, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return s.fail(resp, dns.RcodeFormatError)
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		return s.fail(resp, dns.RcodeRefused)
	}
	switch q.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		return s.fail(resp, dns.RcodeRefused) // answers are computed per client: no transfer
	}

	// One table for the whole answer: a swap in between cannot mix two inventories.
	t := s.table.Load()
	z := t.Zone

	// 1. zone: what is this name?
	name, kind := z.Lookup(q.Name)
	switch kind {
	case zone.Outside:
		return s.fail(resp, dns.RcodeRefused)
	case zone.NXDomain:
		resp.Rcode = dns.RcodeNameError
		return negative(z, resp)
	case zone.Empty:
		return negative(z, resp)
	case zone.Apex:
		switch q.Qtype {
		case dns.TypeSOA:
			resp.Answer = append(resp.Answer, z.SOA())
		case dns.TypeNS:
			resp.Answer = append(resp.Answer, z.NS()...)
		default:
			return negative(z, resp)
		}
		return s.finish(req, resp, udp)
	case zone.NSHost:
		s.addresses(resp, q, z.Glue(), 3600)
		if len(resp.Answer) == 0 {
			return negative(z, resp)
		}
		return s.finish(req, resp, udp)
	}
	if q.Qtype != dns.TypeA && q.Qtype != dns.TypeAAAA && q.Qtype != dns.TypeANY {
		return negative(z, resp)
	}

	// 2. locate: who asks?
	client, bits, ecs := clientSubnet(reqOpt, src)
	loc := t.Locator.Locate(client, bits)
	if ecs != nil {
		// RFC 7871 7.2.1: echo the option with the scope our answer is valid for (the
		// request's own option, which nothing else reads any more).
		ecs.SourceScope = uint8(min(loc.Scope, 128))
		if ecs.Family == 1 {
			ecs.SourceScope = uint8(min(loc.Scope, 32))
		}
		opt := resp.Extra[len(resp.Extra)-1].(*dns.OPT)
		opt.Option = append(opt.Option, ecs)
	}

	// 3. policy: which POPs, with which weights? 4. pick: one of them.
	choice := s.policy.Answers(name, loc.Region).Pick()
	if choice == nil {
		return negative(z, resp) // residency leaves this region no POP for this service
	}
	switch q.Qtype {
	case dns.TypeA:
		s.addresses(resp, q, choice.V4, s.cfg.TTL)
	case dns.TypeAAAA:
		s.addresses(resp, q, choice.V6, s.cfg.TTL)
	default: // ANY: RFC 8482 lets us answer with a subset; the steered addresses are the useful one
		s.addresses(resp, dns.Question{Name: q.Name, Qtype: dns.TypeA, Qclass: q.Qclass}, choice.V4, s.cfg.TTL)
		s.addresses(resp, dns.Question{Name: q.Name, Qtype: dns.TypeAAAA, Qclass: q.Qclass}, choice.V6, s.cfg.TTL)
	}
	if len(resp.Answer) == 0 {
		return negative(z, resp) // the POP has no address of this family
	}
	return s.finish(req, resp, udp)
}

// clientSubnet returns the address to locate and its prefix length: the ECS option when
// the request carries a usable one, else the source address.
func clientSubnet(opt *dns.OPT, src netip.Addr) (netip.Addr, int, *dns.EDNS0_SUBNET) {
	if opt != nil {
		for _, o := range opt.Option {
			e, ok := o.(*dns.EDNS0_SUBNET)
			if !ok {
				continue
			}
			a, ok := netip.AddrFromSlice(e.Address)
			if !ok {
				break
			}
			if e.Family == 1 {
				a = a.Unmap()
			}
			if e.SourceNetmask == 0 {
				// RFC 7871 7.1.2: a /0 source asks us not to use the client's address at all.
				return netip.Addr{}, 0, e
			}
			return a, int(e.SourceNetmask), e
		}
	}
	return src.Unmap(), src.Unmap().BitLen(), nil
}

// addresses appends an A or AAAA record per address of the question's family.
func (s *Server) addresses(resp *dns.Msg, q dns.Question, addrs []netip.Addr, ttl uint32) {
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: ttl}
		switch {
		case q.Qtype == dns.TypeA && a.Is4():
			b := a.As4()
			resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr, A: net.IP(b[:])})
		case q.Qtype == dns.TypeAAAA && a.Is6():
			b := a.As16()
			resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(b[:])})
		}
	}
}

// negative finishes NXDOMAIN and NODATA answers: the SOA in authority tells resolvers
// how long to cache the absence (RFC 2308).
func negative(z *zone.Zone, resp *dns.Msg) *dns.Msg {
	resp.Ns = append(resp.Ns, z.NegativeSOA())
	return resp
}

// fail answers without records and without claiming authority.
func (s *Server) fail(resp *dns.Msg, rcode int) *dns.Msg {
	resp.Authoritative = false
	resp.Rcode = rcode
	return resp
}

// finish truncates UDP answers that exceed what the client can take (TC set: retry over
// TCP).
func (s *Server) finish(req, resp *dns.Msg, udp bool) *dns.Msg {
	if udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(max(o.UDPSize(), dns.MinMsgSize))
		}
		resp.Truncate(size)
	}
	return resp
}
