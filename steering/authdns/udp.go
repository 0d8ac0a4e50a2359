package authdns

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// UDP is served by our own loop instead of dns.Server: dns.Server spends a goroutine and
// two system calls per query, while recvmmsg/sendmmsg (x/net's ReadBatch/WriteBatch)
// move a whole batch per call, which is what lets one core keep up with gdnsd. The common
// query shape is answered straight from the bytes (fast.go); the rest is parsed and
// packed by miekg/dns. TCP stays on dns.Server.

const udpBatch = 32

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// listenReusePort opens one of several UDP sockets sharing addr.
func listenReusePort(addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// serveUDP answers queries on conn until it is closed.
func (s *Server) serveUDP(conn *net.UDPConn) {
	var bc batchConn = ipv4.NewPacketConn(conn)
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		bc = ipv6.NewPacketConn(conn)
	}
	rs := newReaderState()
	in := make([]ipv4.Message, udpBatch)
	out := make([]ipv4.Message, udpBatch)
	outBuf := make([][]byte, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, dns.MaxMsgSize)}
		out[i].Buffers = make([][]byte, 1)
		outBuf[i] = make([]byte, 4096)
	}
	for {
		n, err := bc.ReadBatch(in, 0)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // a transient read error (e.g. ICMP-induced ECONNREFUSED) says nothing about the next datagram
		}
		m := 0
		for i := range n {
			ua, ok := in[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			req, src := in[i].Buffers[0][:in[i].N], ua.AddrPort().Addr()
			if wire, ok := s.fastAnswer(req, src, outBuf[m], rs); ok {
				out[m].Buffers[0], out[m].Addr = wire, in[i].Addr
				m++
				continue
			}
			resp := s.handleWire(req, src, true)
			if resp == nil {
				continue
			}
			wire, err := resp.PackBuffer(outBuf[m])
			if err != nil {
				s.log.Warn("pack response", "err", err)
				continue
			}
			out[m].Buffers[0], out[m].Addr = wire, in[i].Addr
			m++
		}
		for sent := 0; sent < m; {
			k, err := bc.WriteBatch(out[sent:m], 0)
			if err != nil {
				break // the client went away; nothing to retry
			}
			sent += k
		}
	}
}

// handleWire parses one datagram and answers it like dns.Server would: a message whose
// header cannot be read, or that is itself a response, is dropped (a reply could be used
// to amplify or loop); one that fails the default accept rules or does not parse gets
// FORMERR (NOTIMP for unknown opcodes).
func (s *Server) handleWire(b []byte, src netip.Addr, udp bool) *dns.Msg {
	if len(b) < 12 {
		s.invalid.Inc()
		return nil
	}
	h := dns.Header{
		Id: binary.BigEndian.Uint16(b), Bits: binary.BigEndian.Uint16(b[2:]),
		Qdcount: binary.BigEndian.Uint16(b[4:]), Ancount: binary.BigEndian.Uint16(b[6:]),
		Nscount: binary.BigEndian.Uint16(b[8:]), Arcount: binary.BigEndian.Uint16(b[10:]),
	}
	action := dns.DefaultMsgAcceptFunc(h)
	req := new(dns.Msg)
	if action == dns.MsgAccept {
		if err := req.Unpack(b); err == nil {
			return s.count(s.Answer(req, src, udp))
		}
		s.invalid.Inc()
		action = dns.MsgReject
	}
	if action == dns.MsgIgnore {
		return nil
	}
	resp := &dns.Msg{MsgHdr: dns.MsgHdr{Id: h.Id, Response: true, Opcode: int(h.Bits>>11) & 0xF, Rcode: dns.RcodeFormatError}}
	if action == dns.MsgRejectNotImplemented {
		resp.Rcode = dns.RcodeNotImplemented
	}
	return s.count(resp)
}

// count records the response's rcode.
func (s *Server) count(resp *dns.Msg) *dns.Msg {
	if resp != nil && resp.Rcode >= 0 && resp.Rcode < len(s.rcodes) && s.rcodes[resp.Rcode] != nil {
		s.rcodes[resp.Rcode].Inc()
	}
	return resp
}
