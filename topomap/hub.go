package topomap

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Messages the server sends (see README "Websocket protocol").
type snapshotMsg struct {
	Type  string  `json:"type"` // "snapshot"
	Epoch string  `json:"epoch"`
	Seq   uint64  `json:"seq"`
	At    int64   `json:"at,omitempty"`    // a past state: the instant, unix ms (absent: live)
	Speed float64 `json:"speed,omitempty"` // playing the past forward at this speed
	Nodes []*Node `json:"nodes"`
	Edges []*Edge `json:"edges"`
}

type elements struct {
	Nodes []*Node `json:"nodes,omitempty"`
	Edges []*Edge `json:"edges,omitempty"`
}

type ids struct {
	Nodes []string `json:"nodes,omitempty"`
	Edges []string `json:"edges,omitempty"`
}

type deltaMsg struct {
	Type    string   `json:"type"` // "delta"
	Seq     uint64   `json:"seq"`
	Time    int64    `json:"time"`            // unix ms the delta was cut
	At      int64    `json:"at,omitempty"`    // playback: the past instant reached
	Speed   float64  `json:"speed,omitempty"` // playback speed
	Upserts elements `json:"upserts"`
	Removes ids      `json:"removes"`
}

type resumeMsg struct {
	Type  string `json:"type"` // "resume": deltas From+1..Seq follow
	Epoch string `json:"epoch"`
	From  uint64 `json:"from"`
	Seq   uint64 `json:"seq"`
}

// delta is one tick's changes; its elements are immutable clones shared by all clients.
type delta struct {
	seq     uint64
	upserts elements
	removes ids
	at      time.Time
	data    []byte // the unfiltered message, encoded once
}

// hub holds the published graph, the history ring and the connected clients.
type hub struct {
	epoch string

	mu      sync.Mutex
	seq     uint64
	nodes   map[string]*Node
	edges   map[string]*Edge
	ring    []*delta
	ringLen int // bytes in ring
	clients map[*client]struct{}

	maxRing, maxRingBytes int

	encodeMu sync.Mutex // one unfiltered encoding at a time; never taken under mu
	cacheMu  sync.Mutex // guards snapSeq and snapData; held only briefly
	snapSeq  uint64
	snapData []byte
}

func newHub(epoch string, maxRing, maxRingBytes int) *hub {
	return &hub{
		epoch: epoch, nodes: map[string]*Node{}, edges: map[string]*Edge{},
		clients: map[*client]struct{}{}, maxRing: maxRing, maxRingBytes: maxRingBytes,
	}
}

// publish applies one tick's changes, records them in the ring and offers them to every
// client. It returns the delta, or nil when nothing changed.
func (h *hub) publish(nodes []*Node, edges []*Edge, rmNodes, rmEdges []string, now time.Time) (*delta, error) {
	if len(nodes)+len(edges)+len(rmNodes)+len(rmEdges) == 0 {
		return nil, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	d := &delta{seq: h.seq, upserts: elements{nodes, edges}, removes: ids{rmNodes, rmEdges}, at: now}
	var err error
	d.data, err = json.Marshal(deltaMsg{Type: "delta", Seq: d.seq, Time: now.UnixMilli(), Upserts: d.upserts, Removes: d.removes})
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		h.nodes[n.ID] = n
	}
	for _, e := range edges {
		h.edges[e.ID] = e
	}
	for _, id := range rmNodes {
		delete(h.nodes, id)
	}
	for _, id := range rmEdges {
		delete(h.edges, id)
	}
	h.ring = append(h.ring, d)
	h.ringLen += len(d.data)
	for len(h.ring) > h.maxRing || (h.ringLen > h.maxRingBytes && len(h.ring) > 1) {
		h.ringLen -= len(h.ring[0].data)
		h.ring[0] = nil
		h.ring = h.ring[1:]
	}
	for c := range h.clients {
		c.offer(d)
	}
	return d, nil
}

// attach registers c and queues what it needs first: the deltas after since when the
// ring still holds them all and they fit its buffer, else a snapshot (resync). It
// reports whether the client resumed.
func (h *hub) attach(c *client, epoch string, since uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients[c] = struct{}{}
	if epoch != h.epoch || since > h.seq || !h.ringFrom(since) {
		c.requestResync()
		return false
	}
	msg, _ := json.Marshal(resumeMsg{Type: "resume", Epoch: h.epoch, From: since, Seq: h.seq})
	if !c.enqueue(msg) {
		c.requestResync()
		return false
	}
	for _, d := range h.ring {
		if d.seq > since {
			c.offer(d)
		}
	}
	return !c.lagging.Load()
}

func (h *hub) detach(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
}

// snapshot returns the messages that bring a client to the current state: an encoded
// snapshot for f (nil: everything), possibly followed by deltas. When c is given, c's
// queue resumes right after them: both happen under h.mu so that no delta falls between.
// The unfiltered snapshot is encoded once and cached; a client may be given the cached
// one plus the ring's deltas since (shared bytes, not counted against its buffer), which
// spares re-encoding the whole graph for every client of a reconnect storm.
func (h *hub) snapshot(c *client, f *filter) ([][]byte, error) {
	h.mu.Lock()
	seq := h.seq
	if f == nil {
		if data, cseq := h.cached(); data != nil && (cseq == seq || c != nil && seq-cseq <= maxReplay && h.ringFrom(cseq)) {
			msgs := [][]byte{data}
			for _, d := range h.ring {
				if d.seq > cseq {
					msgs = append(msgs, d.data)
				}
			}
			if c != nil {
				c.resynced(nil)
			}
			h.mu.Unlock()
			return msgs, nil
		}
	}
	nodes := make([]*Node, 0, len(h.nodes))
	for _, n := range h.nodes {
		if f.node(n) {
			nodes = append(nodes, n)
		}
	}
	edges := make([]*Edge, 0, len(h.edges))
	for _, e := range h.edges {
		if f.edge(e) {
			edges = append(edges, e)
		}
	}
	if c != nil {
		c.resynced(f)
	}
	h.mu.Unlock()
	if f == nil {
		h.encodeMu.Lock()
		defer h.encodeMu.Unlock()
		if data, cseq := h.cached(); data != nil && cseq == seq {
			return [][]byte{data}, nil
		}
	}
	slices.SortFunc(nodes, func(a, b *Node) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(edges, func(a, b *Edge) int { return strings.Compare(a.ID, b.ID) })
	data, err := snapshotMsg{Type: "snapshot", Epoch: h.epoch, Seq: seq, Nodes: nodes, Edges: edges}.encode()
	if err != nil {
		return nil, err
	}
	if f == nil {
		h.cacheMu.Lock()
		if seq > h.snapSeq || h.snapData == nil {
			h.snapSeq, h.snapData = seq, data
		}
		h.cacheMu.Unlock()
	}
	return [][]byte{data}, nil
}

// cached returns the cached unfiltered snapshot and its seq (nil when none).
func (h *hub) cached() ([]byte, uint64) {
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	return h.snapData, h.snapSeq
}

// maxReplay bounds the deltas sent after a cached snapshot (40 ticks: 10 s by default).
const maxReplay = 40

// ringFrom tells whether the ring holds every delta after seq. Called under h.mu.
func (h *hub) ringFrom(seq uint64) bool {
	return seq == h.seq || len(h.ring) > 0 && h.ring[0].seq <= seq+1
}

func (h *hub) clientCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

func (h *hub) each(fn func(c *client)) {
	h.mu.Lock()
	cs := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		fn(c)
	}
}

// client is one websocket subscriber's queue. The queue is bounded in bytes: a client
// that cannot keep up is marked lagging, its queue is discarded, and its writer sends a
// fresh snapshot once it is writable again.
type client struct {
	queue    chan []byte
	queued   atomic.Int64 // bytes in queue
	limit    int64
	lagging  atomic.Bool
	wake     chan struct{} // signals the writer that a resync is wanted
	filterMu sync.Mutex
	filter   *filter // guarded by filterMu; read under hub.mu by offer
	onSlow   func()
}

func newClient(limit int, onSlow func()) *client {
	return &client{queue: make(chan []byte, 4096), limit: int64(limit), wake: make(chan struct{}, 1), onSlow: onSlow}
}

// offer queues d (filtered for this client) unless the client is lagging. Called under hub.mu.
func (c *client) offer(d *delta) {
	if c.lagging.Load() {
		return
	}
	c.filterMu.Lock()
	f := c.filter
	c.filterMu.Unlock()
	data := d.data
	if f != nil {
		up := elements{}
		for _, n := range d.upserts.Nodes {
			if f.node(n) {
				up.Nodes = append(up.Nodes, n)
			}
		}
		for _, e := range d.upserts.Edges {
			if f.edge(e) {
				up.Edges = append(up.Edges, e)
			}
		}
		if len(up.Nodes)+len(up.Edges)+len(d.removes.Nodes)+len(d.removes.Edges) == 0 {
			return
		}
		data, _ = json.Marshal(deltaMsg{Type: "delta", Seq: d.seq, Time: d.at.UnixMilli(), Upserts: up, Removes: d.removes})
	}
	if !c.enqueue(data) {
		c.requestResync()
		if c.onSlow != nil {
			c.onSlow()
		}
	}
}

func (c *client) enqueue(data []byte) bool {
	if c.queued.Load()+int64(len(data)) > c.limit {
		return false
	}
	select {
	case c.queue <- data:
		c.queued.Add(int64(len(data)))
		return true
	default:
		return false
	}
}

func (c *client) requestResync() {
	c.lagging.Store(true)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// resynced drops what is queued (the snapshot replaces it) and resumes queueing.
// Called under hub.mu.
func (c *client) resynced(f *filter) {
	for {
		select {
		case m := <-c.queue:
			c.queued.Add(-int64(len(m)))
			continue
		default:
		}
		break
	}
	c.filterMu.Lock()
	c.filter = f
	c.filterMu.Unlock()
	c.lagging.Store(false)
}
