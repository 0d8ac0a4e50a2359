package hubble

import (
	"bytes"
	"context"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"time"
	_ "unsafe" // go:linkname, for grpcPoolingThreshold

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meridianhq/meridian/pipeline"
)

// dialer opens GetFlows streams to one relay.
type dialer struct {
	address string
	opts    []grpc.DialOption
}

func newDialer(cfg *Config, rc RelayConfig) (dialer, error) {
	enabled, tlsCfg := cfg.tls(rc)
	opts, err := tlsCfg.GetGRPCDialOptions(enabled)
	if err != nil {
		return dialer{}, err
	}
	opts = append(opts,
		// One attempt per stream: reconnection is paced by the relay loop's backoff, and
		// a peer that accepts TCP but never speaks HTTP/2 fails after ConnectTimeout.
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: cfg.ConnectTimeout,
			Backoff: backoff.Config{BaseDelay: cfg.BackoffMin, Multiplier: 1.6, MaxDelay: cfg.BackoffMax}}),
		// Detects a dead peer on an idle stream. Five minutes is the shortest interval a
		// default gRPC server (Hubble Relay's) accepts without answering "too many pings".
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Minute, Timeout: 20 * time.Second}),
		// A fixed 1 MiB window (about 1,500 flows) instead of gRPC's 64 KiB that BDP
		// estimation grows: fewer WINDOW_UPDATE frames and wake-ups per flow, and with the
		// inbox a known bound on what a relay can have in flight to us.
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(streamWindow),
		// Larger socket reads: fewer read syscalls per flow at line rate.
		grpc.WithReadBufferSize(256<<10),
		// DATA frames are read into buffers of this pool (see grpcPoolingThreshold).
		experimental.WithBufferPool(framePool),
	)
	return dialer{address: rc.Address, opts: opts}, nil
}

// framePool holds the buffers gRPC reads DATA frames into and frees once their messages
// are taken (rawCodec copies each into the inbox), so a flow's frame is no allocation.
var framePool = &bufPool{}

// bufPool is a gRPC buffer pool with classes in powers of two from 256 B to 32 KiB (a
// typical flow's frame, about 950 bytes, takes 1 KiB; gRPC sends frames of up to 16
// KiB). Unlike mem's pools it does not clear what it hands out: gRPC reads a whole frame
// into it, and whoever else takes one writes what it uses.
type bufPool [8]sync.Pool

func (p *bufPool) Get(n int) *[]byte {
	i := max(0, bits.Len(uint(max(n, 1)-1))-8) // the smallest class of at least n bytes
	if i >= len(p) {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p[i].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 256<<i)
	return &b
}

func (p *bufPool) Put(b *[]byte) {
	if i := bits.Len(uint(cap(*b))) - 9; i >= 0 && i < len(p) { // the largest class it fills
		p[i].Put(b)
	}
}

// grpcPoolingThreshold is grpc-go's size at or below which it allocates a buffer instead
// of taking one from a pool (1 KiB). Hubble sends one flow per message and one message per
// DATA frame, of about 950 bytes, so every flow cost a new frame allocation: the largest
// part of the collector's garbage per flow, and so of its garbage collection. Lowered
// once, before any connection exists, for the whole process: smaller buffers are pooled
// too. grpc-go exposes it only to its own tests; if it is renamed, linking fails.
//
//go:linkname grpcPoolingThreshold google.golang.org/grpc/internal/mem.BufferPoolingThreshold
var grpcPoolingThreshold int

func init() { grpcPoolingThreshold = min(grpcPoolingThreshold, 256) }

// streamWindow is the HTTP/2 flow-control window of a relay's connection and stream.
const streamWindow = 1 << 20

// open starts a GetFlows stream and a goroutine receiving from it into an inbox, which
// ends with the stream's error. The inbox lets decoding overlap with receiving; when the
// collector falls behind it fills, the receiver waits, and gRPC flow control slows the
// relay down.
func (d dialer) open(ctx context.Context, req *observer.GetFlowsRequest, in *inbox) (func(), error) {
	conn, err := grpc.NewClient(d.address, d.opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", d.address, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	fail := func(err error) (func(), error) {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("GetFlows %s: %w", d.address, err)
	}
	// The generated client would decode every field of every flow; the relay loop reads
	// the wire bytes itself (wire.go).
	stream, err := conn.NewStream(ctx, &observer.Observer_ServiceDesc.Streams[0], observer.Observer_GetFlows_FullMethodName,
		grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return fail(err)
	}
	if err := stream.SendMsg(req); err != nil {
		return fail(err)
	}
	if err := stream.CloseSend(); err != nil {
		return fail(err)
	}
	in.reset()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for in.waitRoom(ctx) {
			if err := stream.RecvMsg(in); err != nil {
				in.end(fmt.Errorf("GetFlows %s: %w", d.address, err))
				return
			}
		}
		in.end(ctx.Err())
	}()
	closeConn := func() {
		cancel() // ends RecvMsg and a wait for room
		conn.Close()
		wg.Wait()
	}
	return closeConn, nil
}

// rawCodec hands the responses of a stream over as wire bytes, appended to its inbox;
// requests are marshalled by the standard codec.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	in, ok := v.(*inbox)
	if !ok {
		return encoding.GetCodecV2("proto").Unmarshal(data, v)
	}
	in.put(data)
	return nil
}

// inbox carries one stream's messages, as wire bytes, from the receiving goroutine to the
// relay loop in batches: the receiver appends each message under a lock, the loop takes
// all of them at once and hands back its emptied buffers, so the steady state allocates
// nothing and wakes the loop only when it waits. It holds at most inboxBytes bytes (or
// inboxMessages messages): that, gRPC's window and the pipeline's queue bound a relay's
// memory.
type inbox struct {
	mu      sync.Mutex
	buf     []byte // messages back to back
	ends    []int  // where each message ends in buf
	err     error  // why the stream ended
	ended   bool
	full    bool          // the receiver waits for room
	waiting bool          // the loop waits for messages
	wake    chan struct{} // messages or the end arrived while the loop waited
	room    chan struct{} // the loop emptied a full inbox
}

const (
	inboxBytes    = 1 << 20
	inboxMessages = 4096
)

func newInbox() *inbox {
	return &inbox{wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// reset readies the inbox for a new stream.
func (in *inbox) reset() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.buf, in.ends, in.err, in.ended, in.full = in.buf[:0], in.ends[:0], nil, false, false
	select {
	case <-in.room:
	default:
	}
}

func (in *inbox) put(data mem.BufferSlice) {
	in.mu.Lock()
	for _, b := range data {
		in.buf = append(in.buf, b.ReadOnlyData()...)
	}
	in.ends = append(in.ends, len(in.buf))
	in.signal()
	in.mu.Unlock()
}

func (in *inbox) end(err error) {
	in.mu.Lock()
	in.err, in.ended = err, true
	in.signal()
	in.mu.Unlock()
}

// signal wakes the loop if it waits. Called with mu held.
func (in *inbox) signal() {
	if in.waiting {
		in.waiting = false
		select {
		case in.wake <- struct{}{}:
		default:
		}
	}
}

// waitRoom blocks while the inbox is full; false when ctx ended.
func (in *inbox) waitRoom(ctx context.Context) bool {
	in.mu.Lock()
	for len(in.buf) >= inboxBytes || len(in.ends) >= inboxMessages {
		in.full = true
		in.mu.Unlock()
		select {
		case <-in.room:
		case <-ctx.Done():
			return false
		}
		in.mu.Lock()
	}
	in.mu.Unlock()
	return true
}

// batch is what the loop took from the inbox.
type batch struct {
	buf  []byte
	ends []int
	full bool // the receiver had to wait for this batch to be taken: the loop is behind
}

func (b *batch) len() int { return len(b.ends) }

func (b *batch) msg(i int) []byte {
	start := 0
	if i > 0 {
		start = b.ends[i-1]
	}
	return b.buf[start:b.ends[i]:b.ends[i]]
}

// take swaps the inbox's messages into b (whose previous buffers the inbox reuses). With
// no messages it returns the stream's end: ended and its error. Otherwise the caller
// should wait on in.wake, which take arms.
func (in *inbox) take(b *batch) (ended bool, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.buf, b.buf = b.buf[:0], in.buf
	in.ends, b.ends = b.ends[:0], in.ends
	b.full = in.full
	if in.full {
		in.full = false
		select {
		case in.room <- struct{}{}:
		default:
		}
	}
	if len(b.ends) == 0 {
		if in.ended {
			return true, in.err
		}
		in.waiting = true
	}
	return false, nil
}

// resumePoint is where a new stream starts: the newest flow time seen and the flows seen
// at exactly that time, in wire form. Hubble's `since` is inclusive, so a resumed stream
// sends those flows again; they are recognised by content (the same bytes, else
// proto.Equal, the node name included) and dropped, while a distinct flow at the same
// nanosecond is kept.
type resumePoint struct {
	mu       sync.Mutex
	last     time.Time
	boundary [][]byte  // flows at last, bounded by maxBoundary; slices of arena
	arena    []byte    // boundary's bytes, reused when last moves on
	pending  [][]byte  // boundary flows the current stream has not yet sent again (copies)
	from     time.Time // last when the current stream started
}

// maxBoundary bounds the flows remembered at one timestamp; beyond it, more flows at the
// same nanosecond would be stored again after a reconnect.
const maxBoundary = 4096

func (p *resumePoint) load() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// request asks for everything since the resume point, or for the newest backfill flows
// of the relay's buffer on the first connection.
func (p *resumePoint) request(backfill uint64, rc RelayConfig) *observer.GetFlowsRequest {
	req := &observer.GetFlowsRequest{Follow: true, Whitelist: rc.Whitelist, Blacklist: rc.Blacklist}
	if last := p.load(); !last.IsZero() {
		req.Since = timestamppb.New(last)
	} else {
		req.Number = backfill
	}
	return req
}

func (p *resumePoint) startConnection() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.from = p.last
	p.pending = p.pending[:0]
	for _, b := range p.boundary {
		p.pending = append(p.pending, slices.Clone(b))
	}
}

// seen records a flow (its wire bytes, which it copies) and reports whether it is new.
// Called only by the relay loop; the lock guards readers of last.
func (p *resumePoint) seen(f []byte, t time.Time) bool {
	if !p.from.IsZero() && !t.After(p.from) {
		if t.Before(p.from) {
			return false // before `since`: the relay should not have sent it; seen already
		}
		for i, b := range p.pending {
			if sameFlow(b, f) {
				p.pending = slices.Delete(p.pending, i, i+1)
				return false
			}
		}
	}
	switch {
	case t.After(p.last):
		p.mu.Lock()
		p.last = t
		p.mu.Unlock()
		p.arena, p.boundary = p.arena[:0], p.boundary[:0]
		p.keep(f)
	case t.Equal(p.last) && len(p.boundary) < maxBoundary:
		p.keep(f)
	}
	return true
}

// keep copies a boundary flow into the arena. A grown arena leaves the earlier slices
// on the old array, which stays valid.
func (p *resumePoint) keep(f []byte) {
	start := len(p.arena)
	p.arena = append(p.arena, f...)
	p.boundary = append(p.boundary, p.arena[start:len(p.arena):len(p.arena)])
}

// sameFlow reports whether two wire-form flows are the same flow: the same bytes, or,
// for a flow marshalled another way (read back from a checkpoint, another relay
// version), equal messages.
func sameFlow(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var fa, fb flowpb.Flow
	return proto.Unmarshal(a, &fa) == nil && proto.Unmarshal(b, &fb) == nil && proto.Equal(&fa, &fb)
}

// handle processes one message of a stream, in wire form.
func (r *relay) handle(msg []byte) {
	r.lastRecv = time.Now()
	resp, err := readResponse(msg)
	if err == nil && resp.flow != nil {
		err = r.handleFlow(resp)
	}
	if err != nil {
		r.m.malformed.Inc()
		r.log.Warn("hubble relay sent a malformed flow; skipped", "err", err)
		return
	}
	if !resp.other {
		return
	}
	// Node status and lost events are rare: the standard decoder reads them.
	var m observer.GetFlowsResponse
	if err := proto.Unmarshal(msg, &m); err != nil {
		r.m.malformed.Inc()
		r.log.Warn("hubble relay sent a malformed event; skipped", "err", err)
		return
	}
	switch x := m.GetResponseTypes().(type) {
	case *observer.GetFlowsResponse_LostEvents:
		ev := x.LostEvents
		r.m.lost.WithLabelValues(ev.GetSource().String()).Add(float64(ev.GetNumEventsLost()))
		at := r.lastRecv
		if resp.hasTime {
			at = resp.time
		}
		r.batch = append(r.batch, r.edges.lost(at, ev.GetNumEventsLost())...)
		r.log.Warn("hubble lost events", "source", ev.GetSource().String(), "lost", ev.GetNumEventsLost(),
			"cpu", ev.GetCpu().GetValue(), "node", m.GetNodeName())
	case *observer.GetFlowsResponse_NodeStatus:
		r.log.Debug("hubble node status", "node", m.GetNodeName(), "status", x.NodeStatus.GetStateChange().String(),
			"message", x.NodeStatus.GetMessage())
	}
}

func (r *relay) handleFlow(resp response) error {
	fallback := r.lastRecv // the flow's own time, else the relay's, else when it came
	if resp.hasTime {
		fallback = resp.time
	}
	r.follow()
	rec := r.newFlow()
	info, err := r.dec.flow(resp.flow, r.rc.Cluster, fallback, rec)
	if err != nil {
		return err
	}
	if !info.timed {
		r.m.incomplete.WithLabelValues("time").Inc()
	}
	rec.M.Collector, rec.M.Site = r.meta.Collector, r.meta.Site
	if !r.resume.seen(resp.flow, rec.M.Time) {
		r.m.duplicates.Inc()
		return nil
	}
	r.m.received.Inc()
	r.m.lastFlowTime.Set(float64(rec.M.Time.UnixNano()) / 1e9)
	if !info.source {
		r.m.incomplete.WithLabelValues("source").Inc()
	}
	if !info.destination {
		r.m.incomplete.WithLabelValues("destination").Inc()
	}
	if !info.l4 {
		r.m.incomplete.WithLabelValues("l4").Inc()
	}
	keep := false
	if r.sampleAcc += r.cfg.FlowSampleRate; r.sampleAcc >= 1 {
		r.sampleAcc--
		keep = true
	}
	switch {
	case !keep:
		r.m.sampledRate.Inc()
	case r.overloaded && r.cfg.Overload == OverloadSample:
		if r.overloadAcc += r.cfg.OverloadSampleRate; r.overloadAcc >= 1 {
			r.overloadAcc--
		} else {
			keep = false
			r.shed++
			r.m.sampledOverload.Inc()
		}
	}
	r.batch = append(r.batch, r.edges.add(rec, info.response, !keep)...)
	if keep {
		r.batch = append(r.batch, rec)
		r.slab = r.slab[1:] // the record is the pipeline's now
	}
	return nil
}

// flowSlab is how many Flow records are allocated at once: one allocation per slab
// instead of one per flow. Records handed to the pipeline are never reused.
const flowSlab = 256

// newFlow is the next record of the slab; it stays the relay's scratch until handleFlow
// hands it over.
func (r *relay) newFlow() *pipeline.Flow {
	if len(r.slab) == 0 {
		r.slab = make([]pipeline.Flow, flowSlab)
	}
	return &r.slab[0]
}
