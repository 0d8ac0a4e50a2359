// Package hubbletest is a Hubble Relay for tests: a gRPC server implementing Cilium's own
// observer.ObserverServer over an in-memory ring of real flows, with GetFlows honouring
// since, number, first and follow as Hubble's observer does. The ring is unbounded unless
// WithCapacity bounds it, as Hubble's own ring is (4,095 flows by default).
package hubbletest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Load reads `hubble observe -o jsonpb` lines into the real response type; errors name
// the file and line.
func Load(path string) ([]*observer.GetFlowsResponse, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*observer.GetFlowsResponse
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		m := &observer.GetFlowsResponse{}
		if err := protojson.Unmarshal(sc.Bytes(), m); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// Server is the test relay. Its ring survives Stop and Start, like a relay in front of
// agents that keep their buffers while the relay restarts.
type Server struct {
	observer.UnimplementedObserverServer

	mu       sync.Mutex
	ring     []*observer.GetFlowsResponse
	capacity int           // ring bound; 0: none
	base     int           // flows dropped from the ring's head: ring[i] is flow base+i
	hold     int           // streams send flows [0, hold) only; <0: no limit
	changed  chan struct{} // closed and replaced when ring or hold changes
	requests []*observer.GetFlowsRequest
	sent     atomic.Int64
	addr     string
	creds    credentials.TransportCredentials
	srv      *grpc.Server
}

// NewServer returns a stopped server holding ring.
func NewServer(ring []*observer.GetFlowsResponse) *Server {
	return &Server{ring: ring, hold: -1, changed: make(chan struct{})}
}

// WithTLS makes Start serve with these credentials (TLS or mTLS).
func (s *Server) WithTLS(c credentials.TransportCredentials) *Server {
	s.creds = c
	return s
}

// DefaultCapacity is the size of Hubble's flow ring by default (--hubble-event-buffer-capacity).
const DefaultCapacity = 4095

// WithCapacity bounds the ring to n flows: Add drops the oldest beyond it, and a stream
// that falls more than n flows behind skips what was dropped, as Hubble's ring overwrites.
func (s *Server) WithCapacity(n int) *Server {
	s.capacity = n
	return s
}

// Start listens on 127.0.0.1 (a free port the first time, the same one after a Stop).
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.addr = lis.Addr().String()
	var opts []grpc.ServerOption
	if s.creds != nil {
		opts = append(opts, grpc.Creds(s.creds))
	}
	s.srv = grpc.NewServer(opts...)
	observer.RegisterObserverServer(s.srv, s)
	go s.srv.Serve(lis)
	return nil
}

// Stop closes the listener and every stream at once, as a crashing relay would.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Addr is the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Hold makes streams pause after the first n flows of the ring (n < 0: no pause).
func (s *Server) Hold(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = n
	s.notify()
}

// Add appends flows to the ring and wakes following streams.
func (s *Server) Add(flows ...*observer.GetFlowsResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring = append(s.ring, flows...)
	if s.capacity > 0 && len(s.ring) > s.capacity {
		drop := len(s.ring) - s.capacity
		clear(s.ring[:drop]) // the next append that outgrows the array copies only the live flows
		s.ring = s.ring[drop:]
		s.base += drop
	}
	s.notify()
}

// Requests returns the GetFlows requests received so far.
func (s *Server) Requests() []*observer.GetFlowsRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*observer.GetFlowsRequest(nil), s.requests...)
}

// Sent is the number of messages sent over all streams.
func (s *Server) Sent() int { return int(s.sent.Load()) }

func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// GetFlows mirrors Hubble's observer: since (inclusive) takes precedence over number;
// with follow and neither, only new flows are sent. Filters are recorded, not applied.
func (s *Server) GetFlows(req *observer.GetFlowsRequest, stream grpc.ServerStreamingServer[observer.GetFlowsResponse]) error {
	if req.GetFirst() && req.GetFollow() {
		return status.Errorf(codes.InvalidArgument, "first cannot be specified with follow")
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	next := s.base // absolute flow number: flows dropped from the ring keep their numbers
	switch {
	case req.GetSince() != nil:
		since := req.GetSince().AsTime()
		for next < s.base+len(s.ring) && s.ring[next-s.base].GetTime().AsTime().Before(since) {
			next++
		}
	case req.GetNumber() > 0 && !req.GetFirst():
		next = s.base + max(0, len(s.ring)-int(min(req.GetNumber(), uint64(len(s.ring)))))
	case req.GetFollow():
		next = s.base + len(s.ring)
	}
	s.mu.Unlock()
	var sent uint64
	for {
		s.mu.Lock()
		end, held := s.base+len(s.ring), s.hold >= 0
		if held {
			end = min(end, s.hold)
		}
		// A stream that fell behind the ring loses what was overwritten.
		hi := max(end, s.base)
		batch := s.ring[min(max(next, s.base), hi)-s.base : hi-s.base]
		changed := s.changed
		s.mu.Unlock()
		for _, m := range batch {
			if req.GetNumber() > 0 && !req.GetFollow() && sent >= req.GetNumber() {
				return nil
			}
			if err := stream.Send(m); err != nil {
				return err
			}
			sent++
			s.sent.Add(1)
		}
		next = max(next, end)
		if !req.GetFollow() && !held {
			return nil
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// ServerStatus reports the ring's size like a relay does.
func (s *Server) ServerStatus(context.Context, *observer.ServerStatusRequest) (*observer.ServerStatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	maxFlows := s.capacity
	if maxFlows == 0 {
		maxFlows = cap(s.ring)
	}
	return &observer.ServerStatusResponse{NumFlows: uint64(len(s.ring)), MaxFlows: uint64(maxFlows),
		SeenFlows: uint64(s.base + len(s.ring)), UptimeNs: uint64(time.Second)}, nil
}

// Shift moves every flow's time by d, e.g. to bring old captures inside a table's TTL.
func Shift(ring []*observer.GetFlowsResponse, d time.Duration) {
	for _, m := range ring {
		if m.GetTime() != nil {
			m.Time = timestamppb.New(m.GetTime().AsTime().Add(d))
		}
		if f := m.GetFlow(); f.GetTime() != nil {
			f.Time = timestamppb.New(f.GetTime().AsTime().Add(d))
		}
	}
}
