package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// ErrStopped is returned by Append and Flush when the pipeline is not running.
var ErrStopped = errors.New("pipeline is not running")

var tracer = otel.Tracer("github.com/meridianhq/meridian/pipeline")

// Pipeline batches records per kind into blocks, spools every block to disk, inserts it
// with retries, and fans accepted records out to the live consumers. It is a dskit service.
type Pipeline struct {
	services.Service

	cfg       Config
	enc       Encoder
	ins       Inserter
	log       *slog.Logger
	m         *metrics
	tokenBase string // instance and boot id: tokens never repeat across restarts

	lanes     map[Kind]*lane
	consumers []*consumerLane
	spool     *spool
	health    health

	fence     sync.RWMutex // Append holds it shared; stopping takes it to shut the door
	accepting bool
	quit      chan struct{} // closed when stopping starts: wakes blocked Appends
	sealStop  chan struct{} // closed once no Append can send: batchers drain and exit
	sealed    chan struct{} // closed when every batcher has exited: writers may leave when idle
	batchers  sync.WaitGroup
	writers   sync.WaitGroup
	readers   sync.WaitGroup
	stopWrite context.CancelFunc
}

// lane is one record kind's path: queue -> batcher -> spool -> pending -> writer.
type lane struct {
	kind Kind

	// The input queue, bounded in records (not calls, whose sizes vary).
	inMu   sync.Mutex
	inQ    []item
	inRecs int
	room   chan struct{} // closed (and replaced) when the batcher empties the queue
	ready  chan struct{} // wakes the batcher

	mu      sync.Mutex
	pending []*spoolEntry
	wake    chan struct{}
}

// item is one Append call's records of one kind, or a flush request.
type item struct {
	recs  []Record
	flush chan struct{}
}

type consumerLane struct {
	name    string
	c       Consumer
	ch      chan []Record
	dropped prometheus.Counter
	sent    prometheus.Counter
}

// Deps are what the pipeline is given.
type Deps struct {
	Encoder  Encoder  // turns a batch into a Native block (storage.Encoder)
	Inserter Inserter // stores a block (*storage.Store)
	// Consumers get every accepted record, keyed by the name used in metrics and logs.
	Consumers  map[string]Consumer
	Logger     *slog.Logger // nil: discard
	Registerer prometheus.Registerer
}

// New builds a pipeline.
func New(cfg Config, d Deps) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Encoder == nil || d.Inserter == nil {
		return nil, errors.New("pipeline: Encoder and Inserter are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Instance == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("pipeline.instance: not set and no host name: %w", err)
		}
		cfg.Instance = host
	}
	boot := make([]byte, 6)
	_, _ = rand.Read(boot)
	p := &Pipeline{
		cfg: cfg, enc: d.Encoder, ins: d.Inserter, log: d.Logger, m: newMetrics(d.Registerer),
		tokenBase: cfg.Instance + "-" + hex.EncodeToString(boot),
		lanes:     map[Kind]*lane{},
		quit:      make(chan struct{}),
		sealStop:  make(chan struct{}),
		sealed:    make(chan struct{}),
	}
	p.m.spoolMaxBytes.Set(float64(cfg.Spool.MaxBytes))
	for _, k := range Kinds {
		p.lanes[k] = &lane{kind: k, room: make(chan struct{}), ready: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
	}
	for _, name := range slices.Sorted(maps.Keys(d.Consumers)) {
		p.consumers = append(p.consumers, &consumerLane{
			name: name, c: d.Consumers[name], ch: make(chan []Record, cfg.ConsumerQueueSize),
			dropped: p.m.consumerDropped.WithLabelValues(name),
			sent:    p.m.consumerSent.WithLabelValues(name),
		})
	}
	p.Service = services.NewBasicService(p.starting, p.running, p.stopping).WithName("pipeline")
	return p, nil
}

func (p *Pipeline) starting(context.Context) error {
	sp, recovered, err := openSpool(p.cfg.Spool, p.log, p.m)
	if err != nil {
		return err
	}
	p.spool = sp
	sp.onWrite = p.health.spoolWrite
	for _, e := range recovered {
		p.lanes[e.kind].push(e)
	}
	writeCtx, cancel := context.WithCancel(context.Background())
	p.stopWrite = cancel
	for _, l := range p.lanes {
		p.batchers.Add(1)
		go p.batch(l)
		p.writers.Add(1)
		go p.write(writeCtx, l)
	}
	for _, c := range p.consumers {
		p.readers.Add(1)
		go p.consume(c)
	}
	p.fence.Lock()
	p.accepting = true
	p.fence.Unlock()
	return nil
}

func (p *Pipeline) running(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// stopping shuts the door to Append, seals every open batch into the spool, then gives the
// writers ShutdownTimeout to store what they can; the rest waits in the spool for the next
// start.
func (p *Pipeline) stopping(error) error {
	close(p.quit)
	p.fence.Lock()
	p.accepting = false
	p.fence.Unlock()
	close(p.sealStop)
	for _, c := range p.consumers {
		close(c.ch)
	}
	deadline := time.AfterFunc(p.cfg.ShutdownTimeout, p.stopWrite)
	defer deadline.Stop()
	p.batchers.Wait()
	close(p.sealed)
	p.writers.Wait()
	p.stopWrite()
	if len(p.consumers) > 0 && !waitTimeout(&p.readers, p.cfg.ShutdownTimeout) {
		p.log.Warn("pipeline: a consumer did not return within the shutdown timeout")
	}
	p.spool.mu.Lock()
	defer p.spool.mu.Unlock()
	p.log.Info("pipeline stopped", "spool_blocks_left", p.spool.blocks, "spool_bytes_left", p.spool.bytes)
	return nil
}

// Append accepts records: once it returns nil they are in a bounded queue and will be
// spooled within BatchAge. It blocks while the pipeline is full (backpressure) and returns
// ctx's error if the caller gives up; on an error, records of kinds handed over before it
// stay accepted. The pipeline owns the records afterwards: callers must not modify them.
func (p *Pipeline) Append(ctx context.Context, recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	p.fence.RLock()
	defer p.fence.RUnlock()
	if !p.accepting {
		return ErrStopped
	}
	for i, r := range recs {
		if r == nil {
			return fmt.Errorf("pipeline: record %d of %d is nil, nothing appended", i, len(recs))
		}
	}
	first := recs[0].Kind()
	same := true
	for _, r := range recs[1:] {
		if r.Kind() != first {
			same = false
			break
		}
	}
	if same {
		return p.send(ctx, first, slices.Clone(recs))
	}
	groups := map[Kind][]Record{}
	for _, r := range recs {
		groups[r.Kind()] = append(groups[r.Kind()], r)
	}
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		if err := p.send(ctx, k, groups[k]); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pipeline) send(ctx context.Context, k Kind, recs []Record) error {
	l := p.lanes[k]
	if l == nil {
		return fmt.Errorf("pipeline: unknown record kind %d (%T)", k, recs[0])
	}
	if err := p.enqueue(ctx, l, item{recs: recs}); err != nil {
		return err
	}
	p.m.accepted.WithLabelValues(k.String()).Add(float64(len(recs)))
	for _, c := range p.consumers {
		select {
		case c.ch <- recs:
		default:
			c.dropped.Add(float64(len(recs)))
		}
	}
	return nil
}

// enqueue adds an item to the lane's queue, waiting while the queue holds QueueSize
// records (a call larger than the whole queue is let in when the queue is empty).
func (p *Pipeline) enqueue(ctx context.Context, l *lane, it item) error {
	n := len(it.recs)
	var start time.Time
	l.inMu.Lock()
	for l.inRecs > 0 && l.inRecs+n > p.cfg.QueueSize {
		room := l.room
		l.inMu.Unlock()
		if start.IsZero() {
			start = time.Now()
			defer func() { p.m.backpressureSec.Add(time.Since(start).Seconds()) }()
		}
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.quit:
			return ErrStopped
		}
		l.inMu.Lock()
	}
	l.inQ = append(l.inQ, it)
	l.inRecs += n
	l.inMu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
	return nil
}

// take empties the lane's queue.
func (l *lane) take() []item {
	l.inMu.Lock()
	defer l.inMu.Unlock()
	items := l.inQ
	l.inQ, l.inRecs = nil, 0
	close(l.room)
	l.room = make(chan struct{})
	return items
}

// Flush seals every open batch and returns once the blocks holding all records accepted
// before the call are in the spool (durable; not necessarily stored yet).
func (p *Pipeline) Flush(ctx context.Context) error {
	p.fence.RLock()
	if !p.accepting {
		p.fence.RUnlock()
		return ErrStopped
	}
	var done []chan struct{}
	for _, k := range Kinds {
		ch := make(chan struct{})
		if err := p.enqueue(ctx, p.lanes[k], item{flush: ch}); err != nil {
			p.fence.RUnlock()
			return err
		}
		done = append(done, ch)
	}
	p.fence.RUnlock()
	for _, ch := range done {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// batch adds one kind's records to an open block as they arrive and seals it at
// BatchRows rows or BatchAge age.
func (p *Pipeline) batch(l *lane) {
	defer p.batchers.Done()
	b := &openBatch{OpenBlock: p.enc.Open(l.kind)}
	age := time.NewTimer(p.cfg.BatchAge)
	age.Stop()
	seal := func() {
		p.seal(l, b)
		age.Stop()
	}
	add := func(it item) {
		for recs := it.recs; len(recs) > 0; {
			empty := b.Rows() == 0
			n := min(len(recs), p.cfg.BatchRows-b.Rows())
			b.add(recs[:n])
			recs = recs[n:]
			if empty && b.Rows() > 0 {
				age.Reset(p.cfg.BatchAge)
			}
			if b.Rows() >= p.cfg.BatchRows {
				seal()
			}
		}
		if it.flush != nil {
			seal()
			close(it.flush)
		}
	}
	for {
		select {
		case <-l.ready:
			for _, it := range l.take() {
				add(it)
			}
		case <-age.C:
			seal()
		case <-p.sealStop:
			// No Append can enqueue any more: seal what is queued and leave.
			for _, it := range l.take() {
				add(it)
			}
			seal()
			return
		}
	}
}

// openBatch is a kind's open block and the records the Encoder refused since it was
// last sealed.
type openBatch struct {
	OpenBlock
	dropped int
	err     error // the last refusal
}

// add adds recs; a record the Encoder refuses is dropped, so the good records beside it
// are still stored.
func (b *openBatch) add(recs []Record) {
	for len(recs) > 0 {
		i, err := b.Add(recs)
		if err == nil {
			return
		}
		b.dropped, b.err = b.dropped+1, err
		b.add(recs[:i])
		recs = recs[i+1:]
	}
}

// seal encodes the open block and spools it, waiting while the spool is full.
func (p *Pipeline) seal(l *lane, b *openBatch) {
	rows := b.Rows()
	if b.dropped > 0 {
		p.m.dropped.WithLabelValues(l.kind.String(), "encode").Add(float64(b.dropped))
		p.log.Error("pipeline: encoder refused records, dropped them", "kind", l.kind, "dropped", b.dropped, "kept", rows, "err", b.err)
		b.dropped, b.err = 0, nil
	}
	if rows == 0 {
		return
	}
	_, span := tracer.Start(context.Background(), "pipeline.encode",
		trace.WithAttributes(attribute.String("kind", l.kind.String()), attribute.Int("records", rows)))
	native, err := b.Seal()
	span.End()
	if err != nil {
		p.m.dropped.WithLabelValues(l.kind.String(), "encode").Add(float64(rows))
		p.log.Error("pipeline: encoder refused a batch of individually valid records, dropped it", "kind", l.kind, "records", rows, "err", err)
		return
	}
	p.m.batchRows.WithLabelValues(l.kind.String()).Observe(float64(rows))
	seq := p.spool.seq.Add(1)
	bl := Block{Kind: l.kind, Rows: rows, Token: fmt.Sprintf("%s-%s-%d", p.tokenBase, l.kind, seq), Native: native}
	_, span = tracer.Start(context.Background(), "pipeline.spool.write",
		trace.WithAttributes(attribute.String("kind", l.kind.String()), attribute.Int("bytes", len(native))))
	e := p.spool.put(seq, bl, p.sealStop)
	span.End()
	l.push(e)
}

// push queues a spooled block for its writer. Only the first few waiting blocks keep their
// bytes in memory; the others are read back from disk, so a long outage costs disk, not RAM.
func (l *lane) push(e *spoolEntry) {
	l.mu.Lock()
	if len(l.pending) >= 2 && e.onDisk {
		e.native = nil
	}
	l.pending = append(l.pending, e)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *lane) front() *spoolEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 {
		return nil
	}
	return l.pending[0]
}

func (l *lane) pop() {
	l.mu.Lock()
	l.pending[0] = nil
	l.pending = l.pending[1:]
	l.mu.Unlock()
}

// write inserts one kind's blocks in spool order, each until it is stored. It exits when
// the batchers are done and nothing is pending, or when ctx ends (shutdown timeout).
func (p *Pipeline) write(ctx context.Context, l *lane) {
	defer p.writers.Done()
	for ctx.Err() == nil {
		e := l.front()
		if e == nil {
			if isClosed(p.sealed) {
				return
			}
			select {
			case <-l.wake:
			case <-ctx.Done():
			case <-p.sealed:
			}
			continue
		}
		if p.deliver(ctx, e) {
			l.pop()
		}
	}
}

// deliver inserts one block, retrying with capped, jittered exponential backoff. It reports
// false only when ctx ended first (the block stays spooled for the next start).
func (p *Pipeline) deliver(ctx context.Context, e *spoolEntry) bool {
	kind := e.kind.String()
	b, err := p.spool.block(e)
	if err != nil {
		p.spool.quarantine(spoolName(e.seq), err)
		p.spool.release(e)
		p.m.dropped.WithLabelValues(kind, "corrupt").Add(float64(e.rows))
		return true
	}
	bo := newBackoff(ctx, p.cfg.Retry)
	refused := 0 // attempts that failed with a permanent error
	for {
		err := p.insert(ctx, b)
		p.health.insert(e.kind, err)
		if err == nil {
			p.m.blocksInserted.WithLabelValues(kind).Inc()
			p.m.rowsInserted.WithLabelValues(kind).Add(float64(b.Rows))
			p.spool.remove(e)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		p.m.blocksFailed.WithLabelValues(kind).Inc()
		// A few attempts, not one: an error wrongly classed permanent costs a short delay
		// rather than the block.
		if IsPermanent(err) {
			if refused++; refused >= p.cfg.Retry.RejectAfter {
				p.m.blocksRejected.WithLabelValues(kind).Inc()
				p.m.dropped.WithLabelValues(kind, "rejected").Add(float64(b.Rows))
				p.log.Error("pipeline: block refused for good, moved to the spool's rejected/ folder; its kind continues",
					"kind", kind, "rows", b.Rows, "token", b.Token, "file", spoolName(e.seq), "attempts", bo.NumRetries()+1, "err", err)
				p.spool.reject(e)
				return true
			}
		}
		p.log.Warn("pipeline: insert failed, block stays spooled and is retried",
			"kind", kind, "rows", b.Rows, "token", b.Token, "attempt", bo.NumRetries()+1, "permanent", IsPermanent(err), "err", err)
		bo.Wait()
		if ctx.Err() != nil {
			return false
		}
		p.m.blocksRetried.WithLabelValues(kind).Inc()
	}
}

func (p *Pipeline) insert(ctx context.Context, b Block) error {
	ctx, span := tracer.Start(ctx, "pipeline.insert", trace.WithAttributes(
		attribute.String("kind", b.Kind.String()), attribute.Int("rows", b.Rows), attribute.String("token", b.Token)))
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.InsertTimeout)
	defer cancel()
	start := time.Now()
	err := p.ins.Insert(ctx, b)
	p.m.insertDuration.WithLabelValues(b.Kind.String()).Observe(time.Since(start).Seconds())
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// consume feeds one consumer from its own queue, so a slow consumer only drops its own records.
func (p *Pipeline) consume(c *consumerLane) {
	defer p.readers.Done()
	for recs := range c.ch {
		_, span := tracer.Start(context.Background(), "pipeline.consume",
			trace.WithAttributes(attribute.String("consumer", c.name), attribute.Int("records", len(recs))))
		c.c.Consume(recs)
		span.End()
		c.sent.Add(float64(len(recs)))
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
