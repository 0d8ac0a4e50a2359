package topomap

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Time travel: a websocket session may leave the live stream for a past instant (hello or
// "at" with at = unix ms) and play forward from it at a speed (1, 10, 60: seconds of the
// past per second), and come back ("live"). The past comes as the same snapshot and
// deltas as the present (see README "Time travel"): the page keeps one code path.

// playbackStep is how often (wall time) a playing session advances.
const playbackStep = time.Second

// maxRebuilds bounds the rebuilds running at once over every session: each reads the
// history store for every element of the map.
const maxRebuilds = 2

// travelReq is what the reader asks the player: any of a filter change, a past instant
// (with a speed), or live.
type travelReq struct {
	filter    *filter
	setFilter bool
	at        time.Time // zero: unchanged
	speed     float64
	live      bool
}

// player runs one session's time travel; it alone switches the session between live and
// past, so the reader never blocks on a rebuild.
type player struct {
	s *session

	mu      sync.Mutex
	pending travelReq
	has     bool
	wake    chan struct{}

	past  *pastGraph
	speed float64
	seq   uint64
	f     *filter
}

func newPlayer(s *session, f *filter) *player {
	return &player{s: s, wake: make(chan struct{}, 1), f: f}
}

// ask merges r into the pending request: the latest instant and filter win, so a scrubbing
// user costs one rebuild per step the server can serve, not one per mouse move.
func (p *player) ask(r travelReq) {
	p.mu.Lock()
	if r.setFilter {
		p.pending.filter, p.pending.setFilter = r.filter, true
	}
	if r.live {
		p.pending.live, p.pending.at = true, time.Time{}
	}
	if !r.at.IsZero() {
		p.pending.at, p.pending.speed, p.pending.live = r.at, r.speed, false
	}
	p.has = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *player) take() (travelReq, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.pending, p.has
	p.pending, p.has = travelReq{}, false
	return r, ok
}

// run serves requests and playback until ctx ends.
func (p *player) run(ctx context.Context) {
	tick := time.NewTicker(playbackStep)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
			r, ok := p.take()
			if !ok {
				continue
			}
			if r.setFilter {
				p.f = r.filter
			}
			switch {
			case r.live:
				p.goLive()
			case !r.at.IsZero():
				p.speed = r.speed
				p.jump(ctx, r.at)
				last = time.Now()
			case r.setFilter && p.past != nil:
				p.sendSnapshot()
			case r.setFilter:
				p.s.c.filterMu.Lock()
				p.s.c.filter = p.f
				p.s.c.filterMu.Unlock()
				p.s.c.requestResync()
			}
		case now := <-tick.C:
			if p.past == nil || p.speed <= 0 {
				last = now
				continue
			}
			to := p.past.at.Add(time.Duration(float64(now.Sub(last)) * p.speed))
			last = now
			if !to.Before(now.Add(-p.s.m.cfg.Tick)) {
				p.goLive() // playback caught up with the present
				continue
			}
			p.advance(ctx, to)
		}
	}
}

// goLive re-attaches the session to the hub; the writer then sends the live snapshot.
func (p *player) goLive() {
	s := p.s
	s.modeMu.Lock()
	defer s.modeMu.Unlock()
	if p.past == nil && !s.inPast {
		return
	}
	p.past, s.inPast = nil, false
	s.c.filterMu.Lock()
	s.c.filter = p.f
	s.c.filterMu.Unlock()
	s.m.hub.attach(s.c, "", ^uint64(0))
}

// jump rebuilds the graph at at and sends it as a snapshot.
func (p *player) jump(ctx context.Context, at time.Time) {
	s := p.s
	s.modeMu.Lock()
	if !s.inPast {
		s.inPast = true
		s.m.hub.detach(s.c)
	}
	s.c.resynced(nil) // drops what the live stream had queued
	s.modeMu.Unlock()
	past, err := s.m.rebuildAt(ctx, at)
	if err != nil {
		p.sendError(err)
		return
	}
	p.past = past
	p.sendSnapshot()
}

func (p *player) advance(ctx context.Context, to time.Time) {
	m := p.s.m
	nodes, edges, rmNodes, rmEdges, err := m.step(ctx, p.past, to)
	if err != nil {
		p.sendError(err)
		return
	}
	up := elements{}
	for _, n := range nodes {
		if p.f.node(n) {
			up.Nodes = append(up.Nodes, n)
		}
	}
	for _, e := range edges {
		if p.f.edge(e) {
			up.Edges = append(up.Edges, e)
		}
	}
	p.seq++
	data, err := json.Marshal(deltaMsg{Type: "delta", Seq: p.seq, Time: to.UnixMilli(), At: to.UnixMilli(), Speed: p.speed,
		Upserts: up, Removes: ids{rmNodes, rmEdges}})
	if err == nil && !p.s.c.enqueue(data) {
		p.sendSnapshot() // the client fell behind: the whole past state replaces its queue
	}
}

func (p *player) sendSnapshot() {
	nodes, edges := p.past.elements(p.f)
	p.seq++
	data, err := snapshotMsg{Type: "snapshot", Seq: p.seq, At: p.past.at.UnixMilli(), Speed: p.speed, Nodes: nodes, Edges: edges}.encode()
	if err != nil {
		p.sendError(err)
		return
	}
	p.s.c.resynced(nil)
	if !p.s.c.enqueue(data) {
		p.sendError(fmt.Errorf("the past state (%d bytes) exceeds the client buffer; filter it (layers, sites, clusters)", len(data)))
		return
	}
	p.s.m.metrics.snapshots.Inc()
}

// sendError tells the client why the past could not be shown; the session stays open.
func (p *player) sendError(err error) {
	p.s.m.log.Warn("topomap time travel", "remote", p.s.remote, "err", err)
	data, _ := json.Marshal(errorMsg{Type: "error", Error: err.Error()})
	p.s.c.enqueue(data)
}

type errorMsg struct {
	Type  string `json:"type"` // "error"
	Error string `json:"error"`
}

// rebuildAt rebuilds the graph at at, with at most maxRebuilds running at once.
func (m *Map) rebuildAt(ctx context.Context, at time.Time) (*pastGraph, error) {
	if now := time.Now(); at.After(now) {
		return nil, fmt.Errorf("at %s is in the future", at.UTC().Format(time.RFC3339))
	}
	select {
	case m.rebuildSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-m.rebuildSem }()
	start := time.Now()
	p, err := m.rebuild(ctx, at)
	if err == nil {
		m.metrics.rebuilds.Observe(time.Since(start).Seconds())
	}
	return p, err
}

// servePastSnapshot answers GET /map/api/snapshot?at=: the graph as it stood at an instant.
func (m *Map) servePastSnapshot(w http.ResponseWriter, r *http.Request, f *filter, atParam string) {
	at, err := parseInstant(atParam)
	if err != nil {
		http.Error(w, "topomap snapshot: "+err.Error(), http.StatusBadRequest)
		return
	}
	past, err := m.rebuildAt(r.Context(), at)
	if err != nil {
		code := http.StatusInternalServerError
		if err == errNoHistory {
			code = http.StatusNotImplemented
		} else if at.After(time.Now()) {
			code = http.StatusBadRequest
		}
		http.Error(w, "topomap snapshot: "+err.Error(), code)
		return
	}
	nodes, edges := past.elements(f)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(snapshotMsg{Type: "snapshot", At: at.UnixMilli(), Nodes: nodes, Edges: edges})
}

// serveHistoryRange answers GET /map/api/history: the span the time bar may scrub,
// {"available": true, "oldest": unix ms of the oldest stored record the map draws, "now":
// unix ms}, or {"available": false, "reason": …} when this process has no history store
// (a normal state for the page, so not an HTTP error).
func (m *Map) serveHistoryRange(w http.ResponseWriter, r *http.Request) {
	if !m.authorized(r) {
		m.metrics.rejected.WithLabelValues("auth").Inc()
		http.Error(w, "topomap: bad or missing token", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if m.history == nil {
		json.NewEncoder(w).Encode(map[string]any{"available": false, "reason": errNoHistory.Error(), "now": time.Now().UnixMilli()})
		return
	}
	oldest, err := m.oldest(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"available": true, "oldest": oldest.UnixMilli(), "now": time.Now().UnixMilli()})
}

// oldest is the time of the oldest record of the kinds the map draws (ClickHouse answers
// min(time) from part metadata).
func (m *Map) oldest(ctx context.Context) (time.Time, error) {
	oldest := time.Now()
	for _, q := range pastQueries {
		out, err := m.history.Query(ctx, "SELECT toUnixTimestamp64Milli(min(time)), count() > 0 FROM "+m.history.Table(q.kind), "TabSeparated")
		if err != nil {
			m.metrics.historyErrors.WithLabelValues(q.kind.String()).Inc()
			return time.Time{}, fmt.Errorf("topomap history %s: %w", q.kind, err)
		}
		var ms, rows int64
		if _, err := fmt.Sscanf(string(out), "%d\t%d", &ms, &rows); err == nil && rows > 0 && time.UnixMilli(ms).Before(oldest) {
			oldest = time.UnixMilli(ms)
		}
	}
	return oldest, nil
}
