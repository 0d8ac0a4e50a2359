package authdns

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// UDP is served by our own loop instead of dns.Server: dns.Server spends a goroutine and
// two system calls per query, while recvmmsg/sendmmsg move a whole batch per call. The
// common query shape is answered straight from the bytes (fast.go); the rest is parsed
// and packed by miekg/dns. TCP stays on dns.Server.
//
// The batches are our own unix.Mmsghdr vectors rather than x/net's ReadBatch/WriteBatch:
// x/net allocates a net.UDPAddr per datagram, which at gdnsd's rate keeps the garbage
// collector busy; here the kernel writes each datagram and its sender's address into
// buffers allocated once, and the replies go out to the same address bytes.
//
// Each socket's reader blocks in recvmmsg itself, as gdnsd's threads do, and the
// sockets are kept out of Go's poller. Through the poller (non-blocking reads, epoll)
// every quiet moment cost an empty recvmmsg and an epoll_wait, and the poller, which
// watches for output too, was woken each time a reply freed send-buffer space: ~12%
// more CPU per query than gdnsd under dnsperf. The read is an ordinary system call, so
// the runtime hands the P on while the reader waits. (A raw one, keeping the P, gained
// another 2–4% qps but needed a P added per reader and slowed every garbage collection
// while the runtime signalled the readers out of their waits: dropped, see README.)

// udpBatch is the most datagrams one recvmmsg/sendmmsg moves.
const udpBatch = 32

// yieldEvery is how often a busy UDP reader passes through the scheduler: inside the
// 10 ms after which the runtime preempts a goroutine (see serveUDP), with 2 ms to spare
// for the reader's thread being descheduled between two checks. Not more often: each
// yield wakes a second thread (the runtime's wakep) to look for work, ~2% of the
// server's CPU at a yield every 2 ms.
const yieldEvery = 8 * time.Millisecond

// udpSocket is one SO_REUSEPORT socket in blocking mode, outside Go's poller.
type udpSocket struct {
	fd      int
	stopped atomic.Bool
}

// listenUDP opens one of several UDP sockets sharing addr (SO_REUSEPORT). Go resolves
// and binds it; then the descriptor is duplicated and Go's copy closed, which takes the
// socket out of Go's poller.
func listenUDP(addr string) (*udpSocket, net.Addr, error) {
	lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1), omitPMTU(int(fd), network))
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, nil, err
	}
	defer pc.Close()
	raw, err := pc.(*net.UDPConn).SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	fd := -1
	var serr error
	if err := raw.Control(func(s uintptr) { fd, serr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || serr != nil {
		return nil, nil, errors.Join(err, serr)
	}
	// The duplicate shares Go's open file description; Go's copy is closed on return.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	return &udpSocket{fd: fd}, pc.LocalAddr(), nil
}

// omitPMTU keeps replies from being sized by a path MTU learnt from ICMP or sent with
// Don't Fragment: a forged "fragmentation needed" would make the kernel fragment our
// replies, and an off-path attacker can then splice in a forged second fragment. DNS
// servers set this (gdnsd, Knot, BIND, Unbound); an IPv6 socket may also carry IPv4.
func omitPMTU(fd int, network string) error {
	err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_OMIT)
	if network == "udp6" {
		err = errors.Join(err, unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_OMIT))
	}
	return err
}

// stop wakes the reader blocked in recvmmsg: shutting the socket's receive side down
// wakes every waiter, even on an unbound-peer UDP socket (the call reports ENOTCONN).
func (u *udpSocket) stop() {
	u.stopped.Store(true)
	unix.Shutdown(u.fd, unix.SHUT_RD)
}

// mmsgs is one recvmmsg or sendmmsg vector with its buffers, allocated once.
type mmsgs struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	bufs  [][]byte
	names []unix.RawSockaddrInet6 // sender addresses; large enough for either family
}

func newMmsgs(n, size int) *mmsgs {
	m := &mmsgs{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n), names: make([]unix.RawSockaddrInet6, n)}
	for i := range n {
		m.bufs[i] = make([]byte, size)
		m.setBuf(i, m.bufs[i])
		m.hdrs[i].Hdr.Iov = &m.iovs[i]
		m.hdrs[i].Hdr.SetIovlen(1)
		m.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&m.names[i]))
	}
	return m
}

func (m *mmsgs) setBuf(i int, b []byte) {
	m.iovs[i].Base = &b[0]
	m.iovs[i].SetLen(len(b))
}

// src is the sender of received datagram i.
func (m *mmsgs) src(i int) (netip.Addr, bool) {
	switch sa := &m.names[i]; sa.Family {
	case unix.AF_INET:
		return netip.AddrFrom4((*unix.RawSockaddrInet4)(unsafe.Pointer(sa)).Addr), true
	case unix.AF_INET6:
		return netip.AddrFrom16(sa.Addr).Unmap(), true
	}
	return netip.Addr{}, false
}

// recv fills the vector from fd, blocking until at least one datagram is there
// (MSG_WAITFORONE: the rest of the batch is what is already queued).
func (m *mmsgs) recv(fd int) (int, syscall.Errno) {
	for i := range m.hdrs {
		m.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	}
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(len(m.hdrs)), unix.MSG_WAITFORONE, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// send writes the first n messages of the vector without waiting and returns how many
// it dropped: a reply the send buffer cannot take is dropped, as the network would drop
// it, and the client asks again. sendmmsg goes through RawSyscall6, without the
// runtime's entersyscall/exitsyscall: it never blocks, but a full batch outlasts
// sysmon's 20 µs, after which the runtime hands our P to another thread and we take it
// back on return (measured ~25% more CPU per query under dnsperf).
func (m *mmsgs) send(fd, n int) (dropped int) {
	for from := 0; from < n; {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[from])), uintptr(n-from), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EAGAIN: // the same number as EWOULDBLOCK on Linux
			return dropped + n - from
		case e != 0:
			r = 1 // sendmmsg fails only on the first message: skip that reply, send the others
			dropped++
		}
		from += int(r)
	}
	return dropped
}

// serveUDP answers queries on u until u.stop.
func (s *Server) serveUDP(u *udpSocket) {
	rs := newReaderState()
	in := newMmsgs(udpBatch, dns.MaxMsgSize) // a datagram is read whole, up to 64 KiB
	out := newMmsgs(udpBatch, 4096)
	yielded := time.Now()
	for {
		// A goroutine that only makes system calls never passes through the scheduler,
		// so the runtime's monitor (sysmon) takes it for one hogging its P: every 10 ms
		// it signals the reader and takes its P, and then polls every 20 µs for a while,
		// its timer waking on the reader's CPU and preempting it mid-batch. A yield
		// every few milliseconds shows it is not (measured under dnsperf: sysmon
		// wake-ups 10x fewer, preemption signals none, ~5% less CPU per query).
		if time.Since(yielded) > yieldEvery { // one monotonic clock read per batch
			runtime.Gosched()
			yielded = time.Now()
		}
		n, errno := in.recv(u.fd)
		if u.stopped.Load() {
			return
		}
		if errno != 0 {
			continue // EINTR, or a transient error (e.g. ICMP-induced ECONNREFUSED) that says nothing about the next datagram
		}
		m, fast := 0, 0
		for i := range n {
			src, ok := in.src(i)
			if !ok {
				continue
			}
			req := in.bufs[i][:in.hdrs[i].Len]
			wire, ok := s.fastAnswer(req, src, out.bufs[m], rs)
			if ok {
				fast++
			} else {
				resp := s.handleWire(req, src, true)
				if resp == nil {
					continue
				}
				var err error
				if wire, err = resp.PackBuffer(out.bufs[m]); err != nil {
					s.log.Warn("pack response", "err", err)
					continue
				}
			}
			out.setBuf(m, wire)
			out.hdrs[m].Hdr.Name, out.hdrs[m].Hdr.Namelen = in.hdrs[i].Hdr.Name, in.hdrs[i].Hdr.Namelen
			m++
		}
		s.rcodes[dns.RcodeSuccess].Add(float64(fast)) // once per batch: an atomic add per query showed in profiles
		if d := out.send(u.fd, m); d > 0 {
			s.unsent.Add(float64(d))
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
	action := s.accept(h)
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

// accept applies miekg/dns's default accept rules to a request's header and counts what
// they turn away: a response is dropped, a malformed request is invalid (FORMERR).
func (s *Server) accept(h dns.Header) dns.MsgAcceptAction {
	action := dns.DefaultMsgAcceptFunc(h)
	switch action {
	case dns.MsgIgnore:
		s.ignored.Inc()
	case dns.MsgReject:
		s.invalid.Inc()
	}
	return action
}

// acceptTCP is accept for dns.Server, which then writes the FORMERR or NOTIMP reply
// itself: the reply is counted here.
func (s *Server) acceptTCP(h dns.Header) dns.MsgAcceptAction {
	action := s.accept(h)
	switch action {
	case dns.MsgReject:
		s.rcodes[dns.RcodeFormatError].Inc()
	case dns.MsgRejectNotImplemented:
		s.rcodes[dns.RcodeNotImplemented].Inc()
	}
	return action
}

// invalidTCP counts a request dns.Server could not parse; it answers FORMERR when the
// header was readable.
func (s *Server) invalidTCP(m []byte, _ error) {
	s.invalid.Inc()
	if len(m) >= 12 {
		s.rcodes[dns.RcodeFormatError].Inc()
	}
}

// count records the response's rcode.
func (s *Server) count(resp *dns.Msg) *dns.Msg {
	if resp != nil && resp.Rcode >= 0 && resp.Rcode < len(s.rcodes) && s.rcodes[resp.Rcode] != nil {
		s.rcodes[resp.Rcode].Inc()
	}
	return resp
}
