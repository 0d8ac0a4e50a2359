package authdns

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"

	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/steering/locate"
	"github.com/meridianhq/meridian/steering/zone"
)

// The UDP fast path exists for throughput: the built-in GeoDNS must answer at least as
// many queries per second as gdnsd serving a static zone (BenchmarkGeoDNSQPS), and
// miekg/dns's Unpack + Pack cost ~24 allocations and ~2.5 µs per query. Almost every
// query a GeoDNS sees has one shape: one question, class IN, type A or AAAA, for a
// service name, with at most an OPT record carrying at most an ECS option. fastAnswer
// reads exactly that shape from the request bytes and writes the response bytes
// directly, with no allocation; everything else (and anything it is unsure of) returns
// ok=false and takes the miekg/dns path, which stays the reference: FuzzFastMatchesMiekg
// checks that both give the same answer for the same bytes.

// DNS header flag bits (RFC 1035 4.1.1).
const (
	flagQR = 1 << 15
	flagAA = 1 << 10
	flagRD = 1 << 8
	flagCD = 1 << 4
)

// readerState is one UDP reader goroutine's memory, so the fast path takes no locks.
// It holds what it learnt from one table, and forgets it all when the table is swapped.
type readerState struct {
	table *Table // what services and located were learnt from
	// services maps the lower-case wire form of each service name seen so far to its
	// canonical name, the key the policy knows it by. Only service names are kept, so
	// it is bounded by the zone, whatever names clients send.
	services map[string]string
	// located remembers locator results per (client address, prefix length): the locator
	// is immutable, so an entry stays good as long as its table; resolvers send the same
	// few subnets over and over, and a MaxMind lookup with its record decode is the
	// costliest step left. Direct-mapped: a collision just evicts.
	seed    maphash.Seed
	located [1024]locEntry
}

type locEntry struct {
	addr netip.Addr
	bits int
	res  locate.Result
	ok   bool
}

func newReaderState() *readerState {
	return &readerState{services: map[string]string{}, seed: maphash.MakeSeed()}
}

// use makes t the table rs answers from, forgetting what it learnt from another.
func (rs *readerState) use(t *Table) {
	if rs.table != t {
		rs.table = t
		clear(rs.services)
		clear(rs.located[:])
	}
}

func (rs *readerState) locate(l *locate.Locator, addr netip.Addr, bits int) locate.Result {
	a := addr.As16()
	e := &rs.located[(maphash.Bytes(rs.seed, a[:])^uint64(bits))&uint64(len(rs.located)-1)]
	if e.ok && e.addr == addr && e.bits == bits {
		return e.res
	}
	*e = locEntry{addr: addr, bits: bits, res: l.Locate(addr, bits), ok: true}
	return e.res
}

// fastAnswer answers req from src into out (appending from out[:0]) when the request has
// the common shape and the answer is a plain positive A/AAAA answer that fits the
// client's size. ok=false: use the miekg/dns path. The caller counts fast answers.
func (s *Server) fastAnswer(req []byte, src netip.Addr, out []byte, rs *readerState) (_ []byte, ok bool) {
	if len(req) < 12 {
		return nil, false
	}
	bits := binary.BigEndian.Uint16(req[2:])
	// A query (QR clear), opcode QUERY, one question, no answer or authority records, at
	// most one additional record (the OPT).
	if bits&flagQR != 0 || bits>>11&0xF != dns.OpcodeQuery ||
		binary.BigEndian.Uint16(req[4:]) != 1 || binary.BigEndian.Uint16(req[6:]) != 0 ||
		binary.BigEndian.Uint16(req[8:]) != 0 || binary.BigEndian.Uint16(req[10:]) > 1 {
		return nil, false
	}

	// Question: an uncompressed name of ordinary labels, lower-cased into lname for the
	// service lookup (the reply echoes the original case).
	var lname [255]byte
	off, n := 12, 0
	for {
		if off >= len(req) {
			return nil, false
		}
		l := int(req[off])
		if l > 63 || n+1+l > len(lname) || off+1+l > len(req) {
			return nil, false // a compression pointer, an extended label type or too long
		}
		lname[n] = byte(l)
		for i := range l {
			c := req[off+1+i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			lname[n+1+i] = c
		}
		n += 1 + l
		off += 1 + l
		if l == 0 {
			break
		}
	}
	qEnd := off + 4
	if qEnd > len(req) {
		return nil, false
	}
	qtype := binary.BigEndian.Uint16(req[off:])
	if (qtype != dns.TypeA && qtype != dns.TypeAAAA) || binary.BigEndian.Uint16(req[off+2:]) != dns.ClassINET {
		return nil, false
	}
	rs.use(s.table.Load())
	name, isService := rs.services[string(lname[:n])] // no allocation: the compiler looks up by the bytes
	if !isService {
		if name, isService = learnService(rs, req, lname[:n]); !isService {
			return nil, false
		}
	}

	// The optional OPT record: root owner, version 0, options at most one ECS.
	client, srcBits := src.Unmap(), src.Unmap().BitLen()
	edns, size := false, dns.MinMsgSize
	var ecs []byte // the request's ECS option data (family, source, scope, address)
	if binary.BigEndian.Uint16(req[10:]) == 1 {
		if len(req)-qEnd < 11 || req[qEnd] != 0 || binary.BigEndian.Uint16(req[qEnd+1:]) != dns.TypeOPT ||
			req[qEnd+6] != 0 { // EDNS version 0 (else BADVERS, from the miekg path)
			return nil, false
		}
		edns, size = true, max(int(binary.BigEndian.Uint16(req[qEnd+3:])), dns.MinMsgSize)
		rdlen := int(binary.BigEndian.Uint16(req[qEnd+9:]))
		opts := req[qEnd+11:]
		if rdlen != len(opts) {
			return nil, false // truncated, or bytes after the message
		}
		if len(opts) > 0 {
			if len(opts) < 4 || binary.BigEndian.Uint16(opts) != dns.EDNS0SUBNET ||
				int(binary.BigEndian.Uint16(opts[2:])) != len(opts)-4 {
				return nil, false // another option, or more than one
			}
			ecs = opts[4:]
			var ok bool
			if client, srcBits, ok = parseECS(ecs); !ok {
				return nil, false
			}
		}
	} else if qEnd != len(req) {
		return nil, false
	}

	// The chain, as in Answer: locate, policy, pick.
	loc := rs.locate(rs.table.Locator, client, srcBits)
	choice := s.policy.Answers(name, loc.Region).Pick()
	if choice == nil {
		return nil, false // NODATA: rare, the miekg path answers it
	}
	addrs := choice.V4
	if qtype == dns.TypeAAAA {
		addrs = choice.V6
	}

	// Header, the question as asked, one record per address, then the OPT.
	out = binary.BigEndian.AppendUint16(out[:0], binary.BigEndian.Uint16(req))
	out = binary.BigEndian.AppendUint16(out, flagQR|flagAA|bits&(flagRD|flagCD))
	out = binary.BigEndian.AppendUint16(out, 1)
	out = binary.BigEndian.AppendUint16(out, 0) // ANCOUNT, set below
	out = binary.BigEndian.AppendUint16(out, 0)
	out = binary.BigEndian.AppendUint16(out, 0) // ARCOUNT, set below
	out = append(out, req[12:qEnd]...)
	answers := 0
	for _, a := range addrs {
		if qtype == dns.TypeA && !a.Is4() || qtype == dns.TypeAAAA && !a.Is6() {
			continue
		}
		out = append(out, 0xC0, 12) // compression pointer to the question's name
		out = binary.BigEndian.AppendUint16(out, qtype)
		out = binary.BigEndian.AppendUint16(out, dns.ClassINET)
		out = binary.BigEndian.AppendUint32(out, s.cfg.TTL)
		if qtype == dns.TypeA {
			b := a.As4()
			out = append(append(out, 0, 4), b[:]...)
		} else {
			b := a.As16()
			out = append(append(out, 0, 16), b[:]...)
		}
		answers++
	}
	if answers == 0 {
		return nil, false // the POP has no address of this family: NODATA
	}
	binary.BigEndian.PutUint16(out[6:], uint16(answers))
	if edns {
		binary.BigEndian.PutUint16(out[10:], 1)
		out = append(out, 0)
		out = binary.BigEndian.AppendUint16(out, dns.TypeOPT)
		out = binary.BigEndian.AppendUint16(out, ednsSize)
		out = binary.BigEndian.AppendUint32(out, 0)
		if ecs == nil {
			out = binary.BigEndian.AppendUint16(out, 0)
		} else {
			// RFC 7871 7.2.1: echo the option with the scope our answer holds for.
			family, source := binary.BigEndian.Uint16(ecs), ecs[2]
			scope := uint8(min(loc.Scope, 128))
			if family == 1 {
				scope = uint8(min(loc.Scope, 32))
			}
			addrLen := (int(source) + 7) / 8
			out = binary.BigEndian.AppendUint16(out, uint16(4+4+addrLen))
			out = binary.BigEndian.AppendUint16(out, dns.EDNS0SUBNET)
			out = binary.BigEndian.AppendUint16(out, uint16(4+addrLen))
			out = binary.BigEndian.AppendUint16(out, family)
			out = append(out, source, scope)
			out = append(out, ecs[4:4+addrLen]...)
			if source%8 != 0 {
				out[len(out)-1] &= byte(0xFF << (8 - source%8)) // the address masked to its source length
			}
		}
	}
	// miekg/dns truncates by the uncompressed length; answers that big are left to it.
	if len(out)+answers*(qEnd-4-12-2) > size {
		return nil, false
	}
	return out, true
}

// parseECS reads an ECS option's data (RFC 7871 6) into the address to locate and its
// source prefix length, accepting only what miekg/dns and clientSubnet read the same
// way: family 1 or 2, a non-zero source within the family, scope 0, exactly the address
// bytes the source length needs.
func parseECS(b []byte) (netip.Addr, int, bool) {
	if len(b) < 4 || b[3] != 0 {
		return netip.Addr{}, 0, false
	}
	family, source := binary.BigEndian.Uint16(b), int(b[2])
	addr := b[4:]
	if source == 0 || len(addr) != (source+7)/8 {
		return netip.Addr{}, 0, false
	}
	switch {
	case family == 1 && source <= 32:
		var a [4]byte
		copy(a[:], addr)
		return netip.AddrFrom4(a), source, true
	case family == 2 && source <= 128:
		var a [16]byte
		copy(a[:], addr)
		return netip.AddrFrom16(a).Unmap(), source, true
	}
	return netip.Addr{}, 0, false
}

// learnService asks the zone what the question's name (at offset 12 of req, lower-cased
// wire form lname) is, and remembers it when it is a service.
func learnService(rs *readerState, req, lname []byte) (string, bool) {
	qname, _, err := dns.UnpackDomainName(req, 12)
	if err != nil {
		return "", false
	}
	name, kind := rs.table.Zone.Lookup(qname)
	if kind != zone.Service {
		return "", false
	}
	rs.services[string(lname)] = name
	return name, true
}
