package hubble

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
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
	)
	return dialer{address: rc.Address, opts: opts}, nil
}

// open starts a GetFlows stream and a goroutine receiving from it into msgs; when the
// stream ends msgs is closed and its error is sent on errc. The buffer lets parsing
// overlap with receiving; when the pipeline pushes back it fills and gRPC flow control
// slows the relay down.
func (d dialer) open(ctx context.Context, req *observer.GetFlowsRequest) (<-chan *observer.GetFlowsResponse, <-chan error, func(), error) {
	conn, err := grpc.NewClient(d.address, d.opts...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dial %s: %w", d.address, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := observer.NewObserverClient(conn).GetFlows(ctx, req)
	if err != nil {
		cancel()
		conn.Close()
		return nil, nil, nil, fmt.Errorf("GetFlows %s: %w", d.address, err)
	}
	msgs := make(chan *observer.GetFlowsResponse, 1024)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(msgs)
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- fmt.Errorf("GetFlows %s: %w", d.address, err)
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
	}()
	closeConn := func() {
		cancel() // ends Recv and a blocked send
		conn.Close()
		wg.Wait()
	}
	return msgs, errc, closeConn, nil
}

// resumePoint is where a new stream starts: the newest flow time seen and the flows seen
// at exactly that time. Hubble's `since` is inclusive, so a resumed stream sends those
// flows again; they are recognised by content (proto.Equal, the node name included)
// and dropped, while a distinct flow at the same nanosecond is kept.
type resumePoint struct {
	mu       sync.Mutex
	last     time.Time
	boundary []*flowpb.Flow // flows at last, bounded by maxBoundary
	pending  []*flowpb.Flow // boundary flows the current stream has not yet sent again
	from     time.Time      // last when the current stream started
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
	p.pending = slices.Clone(p.boundary)
}

// seen records a flow and reports whether it is new. Called only by the relay loop; the
// lock guards readers of last.
func (p *resumePoint) seen(f *flowpb.Flow, t time.Time) bool {
	if !p.from.IsZero() && !t.After(p.from) {
		if t.Before(p.from) {
			return false // before `since`: the relay should not have sent it; seen already
		}
		for i, b := range p.pending {
			if proto.Equal(b, f) {
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
		clear(p.boundary)
		p.boundary = append(p.boundary[:0], f)
	case t.Equal(p.last) && len(p.boundary) < maxBoundary:
		p.boundary = append(p.boundary, f)
	}
	return true
}

// handle processes one message of a stream.
func (r *relay) handle(m *observer.GetFlowsResponse) {
	r.lastRecv = time.Now()
	switch x := m.GetResponseTypes().(type) {
	case *observer.GetFlowsResponse_Flow:
		r.handleFlow(x.Flow, m)
	case *observer.GetFlowsResponse_LostEvents:
		ev := x.LostEvents
		r.m.lost.WithLabelValues(ev.GetSource().String()).Add(float64(ev.GetNumEventsLost()))
		r.log.Warn("hubble lost events", "source", ev.GetSource().String(), "lost", ev.GetNumEventsLost(),
			"cpu", ev.GetCpu().GetValue(), "node", m.GetNodeName())
	case *observer.GetFlowsResponse_NodeStatus:
		r.log.Debug("hubble node status", "node", m.GetNodeName(), "status", x.NodeStatus.GetStateChange().String(),
			"message", x.NodeStatus.GetMessage())
	}
}

func (r *relay) handleFlow(f *flowpb.Flow, m *observer.GetFlowsResponse) {
	if f == nil {
		return
	}
	fallback := r.lastRecv // the flow's own time, else the relay's, else when it came
	if ts := m.GetTime(); ts != nil && ts.IsValid() {
		fallback = ts.AsTime()
	}
	if ts := f.GetTime(); ts == nil || !ts.IsValid() {
		r.m.incomplete.WithLabelValues("time").Inc()
	}
	rec := r.parser.Parse(f, r.rc.Cluster, fallback)
	rec.M.Collector, rec.M.Site = r.meta.Collector, r.meta.Site
	if !r.resume.seen(f, rec.M.Time) {
		r.m.duplicates.Inc()
		return
	}
	r.m.received.Inc()
	r.m.lastFlowTime.Set(float64(rec.M.Time.UnixNano()) / 1e9)
	if f.GetSource() == nil {
		r.m.incomplete.WithLabelValues("source").Inc()
	}
	if f.GetDestination() == nil {
		r.m.incomplete.WithLabelValues("destination").Inc()
	}
	if f.GetL4() == nil {
		r.m.incomplete.WithLabelValues("l4").Inc()
	}
	r.batch = append(r.batch, r.edges.add(&rec, isResponse(f.GetL7()))...)
	r.sampleAcc += r.cfg.FlowSampleRate
	if r.sampleAcc >= 1 {
		r.sampleAcc--
		r.batch = append(r.batch, &rec)
	}
}
