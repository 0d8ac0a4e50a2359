package pipeline

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/meridianhq/meridian/internal/testlog"
	"github.com/meridianhq/meridian/internal/wait"
)

// fakeEncoder writes each record's Meta().Collector on a line; "bad" is refused.
type fakeEncoder struct{}

func (fakeEncoder) Open(k Kind) OpenBlock { return &fakeBlock{kind: k} }

type fakeBlock struct {
	kind Kind
	b    strings.Builder
	rows int
}

func (f *fakeBlock) Add(recs []Record) (int, error) {
	for i, r := range recs {
		if r.Kind() != f.kind {
			return i, fmt.Errorf("record of kind %s in a %s batch", r.Kind(), f.kind)
		}
		if r.Meta().Collector == "bad" {
			return i, errors.New("bad record")
		}
	}
	for _, r := range recs {
		f.b.WriteString(r.Meta().Collector + "\n")
	}
	f.rows += len(recs)
	return 0, nil
}

func (f *fakeBlock) Rows() int { return f.rows }

func (f *fakeBlock) Seal() ([]byte, error) {
	out := []byte(f.b.String())
	f.b.Reset()
	f.rows = 0
	return out, nil
}

// fakeInserter stores blocks once per token and records every attempt.
type fakeInserter struct {
	mu       sync.Mutex
	fail     func(b Block) error // nil: succeed
	attempts []attempt
	stored   map[string]Block
	ids      []string // stored record ids, in insert order
}

type attempt struct {
	at    time.Time
	token string
	err   error
}

func newFakeInserter() *fakeInserter { return &fakeInserter{stored: map[string]Block{}} }

func (f *fakeInserter) Insert(ctx context.Context, b Block) error {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	var err error
	if fail != nil {
		err = fail(b)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts = append(f.attempts, attempt{time.Now(), b.Token, err})
	if err != nil {
		return err
	}
	if _, dup := f.stored[b.Token]; !dup {
		f.stored[b.Token] = b
		f.ids = append(f.ids, strings.Fields(string(b.Native))...)
	}
	return nil
}

func (f *fakeInserter) setFail(fn func(Block) error) {
	f.mu.Lock()
	f.fail = fn
	f.mu.Unlock()
}

func (f *fakeInserter) storedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ids...)
}

func (f *fakeInserter) blocks() []Block {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Block
	for _, b := range f.stored {
		out = append(out, b)
	}
	return out
}

func testConfig(t *testing.T) Config {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("test", flag.PanicOnError))
	cfg.Instance = "test"
	cfg.Spool.Path = filepath.Join(t.TempDir(), "spool")
	cfg.Retry.MinBackoff = 5 * time.Millisecond
	cfg.Retry.MaxBackoff = 20 * time.Millisecond
	cfg.ShutdownTimeout = 2 * time.Second
	return cfg
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func start(t *testing.T, cfg Config, ins Inserter, consumers map[string]Consumer) (*Pipeline, *prometheus.Registry) {
	t.Helper()
	return startLogged(t, cfg, ins, consumers, discard())
}

func startLogged(t *testing.T, cfg Config, ins Inserter, consumers map[string]Consumer, log *slog.Logger) (*Pipeline, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(cfg, Deps{Encoder: fakeEncoder{}, Inserter: ins, Consumers: consumers, Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), p) })
	return p, reg
}

func tunnels(from, n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = &TunnelStat{M: Meta{Collector: fmt.Sprintf("t%d", from+i)}}
	}
	return recs
}

func TestBatchByRows(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchRows = 10
	cfg.BatchAge = time.Hour
	ins := newFakeInserter()
	p, _ := start(t, cfg, ins, nil)

	if err := p.Append(context.Background(), tunnels(0, 25)...); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "two full blocks", func() bool { return len(ins.blocks()) == 2 })
	for _, b := range ins.blocks() {
		if b.Rows != 10 {
			t.Errorf("block %s has %d rows, want 10", b.Token, b.Rows)
		}
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the flushed remainder", func() bool { return len(ins.blocks()) == 3 })
	ids := ins.storedIDs()
	for i, id := range ids {
		if want := fmt.Sprintf("t%d", i); id != want {
			t.Fatalf("record %d stored as %s, want %s (order within a kind must hold)", i, id, want)
		}
	}
	if len(ids) != 25 {
		t.Fatalf("stored %d records, want 25", len(ids))
	}
}

func TestBatchByAge(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchRows = 1000
	cfg.BatchAge = 100 * time.Millisecond
	ins := newFakeInserter()
	p, reg := start(t, cfg, ins, nil)

	begin := time.Now()
	if err := p.Append(context.Background(), tunnels(0, 3)...); err != nil {
		t.Fatal(err)
	}
	if err := p.Append(context.Background(), &Probe{M: Meta{Collector: "p0"}}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "blocks sealed by age", func() bool { return len(ins.blocks()) == 2 })
	if el := time.Since(begin); el < cfg.BatchAge {
		t.Errorf("blocks sealed after %s, before the batch age %s", el, cfg.BatchAge)
	}
	rows := map[Kind]int{}
	for _, b := range ins.blocks() {
		rows[b.Kind] = b.Rows
	}
	if rows[KindTunnelStat] != 3 || rows[KindProbe] != 1 {
		t.Errorf("rows per kind = %v, want 3 tunnel_stat and 1 probe in separate blocks", rows)
	}
	if got := testutil.ToFloat64(p.m.accepted.WithLabelValues("tunnel_stat")); got != 3 {
		t.Errorf("accepted tunnel_stat = %v, want 3", got)
	}
	if n, err := testutil.GatherAndCount(reg, "meridian_pipeline_batch_rows"); err != nil || n != 2 {
		t.Errorf("batch_rows histograms = %d (%v), want 2", n, err)
	}
}

func TestRetryBackoffSameToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchRows = 5
	cfg.Retry.MinBackoff = 20 * time.Millisecond
	cfg.Retry.MaxBackoff = 50 * time.Millisecond
	ins := newFakeInserter()
	var calls atomic.Int32
	ins.setFail(func(Block) error {
		if calls.Add(1) <= 4 {
			return errors.New("connection refused")
		}
		return nil
	})
	p, _ := start(t, cfg, ins, nil)
	if err := p.Append(context.Background(), tunnels(0, 5)...); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the block stored after retries", func() bool { return len(ins.blocks()) == 1 })

	ins.mu.Lock()
	at := append([]attempt(nil), ins.attempts...)
	ins.mu.Unlock()
	if len(at) != 5 {
		t.Fatalf("%d attempts, want 5 (4 failures then success)", len(at))
	}
	// dskit backoff: a jittered wait in [min, 2*min), doubling, capped at max.
	minGap := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 25 * time.Millisecond, 25 * time.Millisecond}
	for i := 1; i < len(at); i++ {
		if at[i].token != at[0].token {
			t.Errorf("attempt %d token %q differs from the first %q: a retried block must keep its token", i, at[i].token, at[0].token)
		}
		if gap := at[i].at.Sub(at[i-1].at); gap < minGap[i-1] {
			t.Errorf("gap before attempt %d = %s, want >= %s", i, gap, minGap[i-1])
		}
	}
	if got := testutil.ToFloat64(p.m.blocksFailed.WithLabelValues("tunnel_stat")); got != 4 {
		t.Errorf("blocks_failed = %v, want 4", got)
	}
	if got := testutil.ToFloat64(p.m.blocksRetried.WithLabelValues("tunnel_stat")); got != 4 {
		t.Errorf("blocks_retried = %v, want 4", got)
	}
	wait.Until(t, 10*time.Second, "an empty spool", func() bool { return testutil.ToFloat64(p.m.spoolBlocks) == 0 })
}

func TestFanOutIsolatesSlowConsumer(t *testing.T) {
	cfg := testConfig(t)
	cfg.ConsumerQueueSize = 2
	cfg.BatchRows = 10
	release := make(chan struct{})
	var fast, slow atomic.Int64
	consumers := map[string]Consumer{
		"slow": ConsumerFunc(func(recs []Record) { <-release; slow.Add(int64(len(recs))) }),
		"fast": ConsumerFunc(func(recs []Record) { fast.Add(int64(len(recs))) }),
	}
	ins := newFakeInserter()
	p, reg := start(t, cfg, ins, consumers)
	defer close(release)

	const n = 200
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := p.Append(ctx, tunnels(i, 1)...); err != nil {
			t.Fatalf("append %d: %v (a blocked consumer must not stall Append)", i, err)
		}
		cancel()
		// Paced so the fast consumer's own small queue never overflows.
		wait.Until(t, 10*time.Second, "the fast consumer gets the record", func() bool { return fast.Load() == int64(i+1) })
	}
	wait.Until(t, 10*time.Second, "the writer stores every record", func() bool { return len(ins.storedIDs()) == n })
	dropped := testutil.ToFloat64(p.m.consumerDropped.WithLabelValues("slow"))
	// The slow consumer holds one call and its queue two (or only the two queued ones if
	// its goroutine was late to take the first); everything else is dropped.
	if dropped != n-3 && dropped != n-2 {
		t.Errorf("slow consumer dropped %v records, want %d", dropped, n-3)
	}
	if got := testutil.ToFloat64(p.m.consumerDropped.WithLabelValues("fast")); got != 0 {
		t.Errorf("fast consumer dropped %v records, want 0", got)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(`
# HELP meridian_pipeline_consumer_delivered_records_total Records delivered to a consumer.
# TYPE meridian_pipeline_consumer_delivered_records_total counter
meridian_pipeline_consumer_delivered_records_total{consumer="fast"} %d
meridian_pipeline_consumer_delivered_records_total{consumer="slow"} 0
`, n)), "meridian_pipeline_consumer_delivered_records_total"); err != nil {
		t.Error(err)
	}
}

func TestBackpressureWhenSpoolFull(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchRows = 1
	cfg.QueueSize = 1
	cfg.Spool.MaxBytes = 200 // about two one-record blocks
	ins := newFakeInserter()
	down := errors.New("clickhouse down")
	ins.setFail(func(Block) error { return down })
	var logs testlog.Buffer
	p, reg := startLogged(t, cfg, ins, nil, slog.New(slog.NewTextHandler(&logs, nil)))

	// Append until the spool is full and sealing waits for room.
	var accepted int
	for testutil.ToFloat64(p.m.backpressure) == 0 {
		if accepted == 1000 {
			t.Fatal("the spool never filled with a failing inserter")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := p.Append(ctx, tunnels(accepted, 1)...)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break // the spool filled up between the check and the call
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	// With sealing stuck, at most queue_size (1) more record fits, then Append blocks.
	blockedAt := -1
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := p.Append(ctx, tunnels(accepted, 1)...)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			blockedAt = i
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	if blockedAt < 0 {
		t.Fatal("Append never blocked with a full spool and a failing inserter")
	}
	if got := testutil.ToFloat64(p.m.backpressure); got != 1 {
		t.Errorf("meridian_pipeline_backpressure = %v while Append blocks, want 1", got)
	}
	if got := testutil.ToFloat64(p.m.spoolBlocks); got < 1 {
		t.Errorf("spool_blocks = %v, want the backlog to show", got)
	}

	// A blocked Append returns once storage is back and the spool drains.
	blocked := make(chan error, 1)
	go func() { blocked <- p.Append(context.Background(), tunnels(accepted, 1)...) }()
	select {
	case err := <-blocked:
		t.Fatalf("Append returned %v with a full spool, want it to block", err)
	case <-time.After(50 * time.Millisecond):
	}
	ins.setFail(nil)
	select {
	case err := <-blocked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Append still blocked after storage recovered")
	}
	accepted++
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "every accepted record stored", func() bool { return len(ins.storedIDs()) == accepted })
	wait.Until(t, 10*time.Second, "backpressure released", func() bool { return testutil.ToFloat64(p.m.backpressure) == 0 })
	if got := testutil.ToFloat64(p.m.backpressureSec); got <= 0 {
		t.Errorf("backpressure_seconds_total = %v, want > 0", got)
	}
	// One episode: logged once when it starts and once when it ends, not per blocked call.
	if n := strings.Count(logs.String(), "pipeline spool full"); n != 1 {
		t.Errorf("backpressure start logged %d times, want once:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "backpressure released"); n != 1 {
		t.Errorf("backpressure end logged %d times, want once", n)
	}
	if n, _ := testutil.GatherAndCount(reg, "meridian_pipeline_spool_bytes", "meridian_pipeline_spool_max_bytes"); n != 2 {
		t.Errorf("spool gauges exported: %d, want 2", n)
	}
}

func TestSpoolSurvivesRestart(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchRows = 10
	down := newFakeInserter()
	down.setFail(func(Block) error { return errors.New("clickhouse down") })
	cfg.ShutdownTimeout = 0
	p1, _ := start(t, cfg, down, nil)
	if err := p1.Append(context.Background(), tunnels(0, 35)...); err != nil {
		t.Fatal(err)
	}
	if err := services.StopAndAwaitTerminated(context.Background(), p1); err != nil {
		t.Fatal(err)
	}
	if err := p1.Append(context.Background(), tunnels(35, 1)...); !errors.Is(err, ErrStopped) {
		t.Errorf("Append after stop = %v, want ErrStopped", err)
	}
	files, _ := filepath.Glob(filepath.Join(cfg.Spool.Path, "*"+spoolExt))
	if len(files) != 4 {
		t.Fatalf("spool holds %d blocks after stop, want 4", len(files))
	}
	first := map[string]bool{}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		e, err := decodeBlock(0, data)
		if err != nil {
			t.Fatal(err)
		}
		first[e.token] = true
	}

	up := newFakeInserter()
	p2, _ := start(t, cfg, up, nil)
	wait.Until(t, 10*time.Second, "the recovered spool to drain", func() bool { return len(up.storedIDs()) == 35 })
	for i, id := range up.storedIDs() {
		if want := fmt.Sprintf("t%d", i); id != want {
			t.Fatalf("record %d drained as %s, want %s: the spool drains in order", i, id, want)
		}
	}
	// Tokens survive the restart, so a block stored just before a crash dedups on re-send.
	for _, b := range up.blocks() {
		if !first[b.Token] {
			t.Errorf("block re-sent with token %s, not the token it was spooled with", b.Token)
		}
	}
	wait.Until(t, 10*time.Second, "an empty spool", func() bool { return testutil.ToFloat64(p2.m.spoolBlocks) == 0 })
}

func TestTornSpoolFilesAreReported(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	m := newMetrics(prometheus.NewRegistry())
	s, _, err := openSpool(SpoolConfig{Path: dir, MaxBytes: 1 << 20, Fsync: true}, discard(), m)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		e := s.put(i, Block{Kind: KindFlow, Rows: 1, Token: fmt.Sprintf("tok-%d", i), Native: []byte(strings.Repeat("x", 100))}, nil)
		if !e.onDisk {
			t.Fatal("block not written")
		}
	}
	last := filepath.Join(dir, spoolName(3))
	fi, _ := os.Stat(last)
	if err := os.Truncate(last, fi.Size()-7); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, spoolName(4)+tmpExt), []byte("MRDSPL01\x05"), 0o640); err != nil {
		t.Fatal(err)
	}
	flipped := filepath.Join(dir, spoolName(2))
	data, _ := os.ReadFile(flipped)
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(flipped, data, 0o640); err != nil {
		t.Fatal(err)
	}

	m2 := newMetrics(prometheus.NewRegistry())
	s2, entries, err := openSpool(SpoolConfig{Path: dir, MaxBytes: 1 << 20}, discard(), m2)
	if err != nil {
		t.Fatalf("a torn spool must not fail the start: %v", err)
	}
	if len(entries) != 1 || entries[0].token != "tok-1" {
		t.Fatalf("recovered %v, want only tok-1", entries)
	}
	if got := testutil.ToFloat64(m2.spoolCorrupt); got != 3 {
		t.Errorf("spool_corrupt_files_total = %v, want 3 (truncated, bit-flipped, tmp)", got)
	}
	moved, _ := os.ReadDir(filepath.Join(dir, corruptDir))
	if len(moved) != 3 {
		t.Errorf("corrupt/ holds %d files, want 3", len(moved))
	}
	b, err := s2.block(entries[0])
	if err != nil || b.Token != "tok-1" || len(b.Native) != 100 || b.Kind != KindFlow {
		t.Errorf("recovered block = %+v, %v", b, err)
	}
	if s2.seq.Load() != 1 {
		t.Errorf("next sequence continues from %d, want 1", s2.seq.Load())
	}
}

func TestBadRecordDoesNotLoseItsNeighbours(t *testing.T) {
	cfg := testConfig(t)
	ins := newFakeInserter()
	p, _ := start(t, cfg, ins, nil)
	recs := tunnels(0, 4)
	recs[2].Meta().Collector = "bad"
	if err := p.Append(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the good records stored", func() bool { return len(ins.storedIDs()) == 3 })
	if got := testutil.ToFloat64(p.m.dropped.WithLabelValues("tunnel_stat", "encode")); got != 1 {
		t.Errorf("dropped{reason=encode} = %v, want 1", got)
	}
}

// TestPermanentErrorRejectsBlock: a block the store refuses for good gets
// retry.reject_after attempts, then goes to rejected/ with a log line naming the error
// and a metric, and the blocks behind it are stored; a block failing with transient
// errors is retried past that bound and never rejected.
func TestPermanentErrorRejectsBlock(t *testing.T) {
	cfg := testConfig(t)
	cfg.Retry.RejectAfter = 3
	ins := newFakeInserter()
	transient := 0
	ins.setFail(func(b Block) error {
		switch {
		case strings.Contains(string(b.Native), "t0"):
			return Permanent(errors.New("Code: 469. DB::Exception: Constraint no_poison is violated (VIOLATED_CONSTRAINT)"))
		case strings.Contains(string(b.Native), "t1") && transient < 2*cfg.Retry.RejectAfter:
			transient++
			return errors.New("connection reset by peer")
		}
		return nil
	})
	var logs testlog.Buffer
	p, _ := startLogged(t, cfg, ins, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	for i := range 3 {
		if err := p.Append(context.Background(), tunnels(i, 1)...); err != nil {
			t.Fatal(err)
		}
		if err := p.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	wait.Until(t, 10*time.Second, "the blocks after the rejected one stored", func() bool { return len(ins.storedIDs()) == 2 })
	if got := ins.storedIDs(); !slices.Equal(got, []string{"t1", "t2"}) {
		t.Errorf("stored %v, want t1 (after %d transient failures) and t2", got, 2*cfg.Retry.RejectAfter)
	}
	ins.mu.Lock()
	poisonAttempts := 0
	for _, a := range ins.attempts {
		if IsPermanent(a.err) {
			poisonAttempts++
		}
	}
	ins.mu.Unlock()
	if poisonAttempts != cfg.Retry.RejectAfter {
		t.Errorf("the refused block was tried %d times, want %d", poisonAttempts, cfg.Retry.RejectAfter)
	}
	if got := testutil.ToFloat64(p.m.blocksRejected.WithLabelValues("tunnel_stat")); got != 1 {
		t.Errorf("blocks_rejected = %v, want 1", got)
	}
	if got := testutil.ToFloat64(p.m.dropped.WithLabelValues("tunnel_stat", "rejected")); got != 1 {
		t.Errorf("records_dropped{reason=rejected} = %v, want 1", got)
	}
	rejected, _ := os.ReadDir(filepath.Join(cfg.Spool.Path, rejectedDir))
	if len(rejected) != 1 {
		t.Errorf("rejected/ holds %d files, want 1", len(rejected))
	}
	if l := logs.String(); !strings.Contains(l, "moved to the spool's rejected/ folder") || !strings.Contains(l, "VIOLATED_CONSTRAINT") {
		t.Errorf("no log line naming the rejection and its error:\n%s", l)
	}
}

func TestConfigValidate(t *testing.T) {
	var def Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	def.RegisterFlags(fs)
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if def.BatchRows != 200000 || def.BatchAge != time.Second || def.Spool.Path != "./data/spool" || def.Spool.MaxBytes != 1<<30 {
		t.Errorf("defaults = %+v", def)
	}
	if err := fs.Parse([]string{"-pipeline.spool.max-bytes=64MiB", "-pipeline.batch-rows=10"}); err != nil {
		t.Fatal(err)
	}
	if def.Spool.MaxBytes != 64<<20 || def.BatchRows != 10 {
		t.Errorf("flags not applied: %+v", def)
	}
	for field, mutate := range map[string]func(*Config){
		"pipeline.batch_rows":         func(c *Config) { c.BatchRows = 0 },
		"pipeline.batch_age":          func(c *Config) { c.BatchAge = 0 },
		"pipeline.retry.max_backoff":  func(c *Config) { c.Retry.MaxBackoff = time.Millisecond },
		"pipeline.retry.reject_after": func(c *Config) { c.Retry.RejectAfter = 0 },
		"pipeline.spool.path":         func(c *Config) { c.Spool.Path = "" },
		"pipeline.spool.max_bytes":    func(c *Config) { c.Spool.MaxBytes = 0 },
	} {
		c := def
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate with bad %s = %v, want an error naming it", field, err)
		}
	}
}

func TestSpansAroundStages(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })

	cfg := testConfig(t)
	var got atomic.Int64
	ins := newFakeInserter()
	p, _ := start(t, cfg, ins, map[string]Consumer{"map": ConsumerFunc(func(r []Record) { got.Add(int64(len(r))) })})
	if err := p.Append(context.Background(), tunnels(0, 3)...); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the block stored and consumed", func() bool { return len(ins.blocks()) == 1 && got.Load() == 3 })
	wait.Until(t, 10*time.Second, "all four stage spans", func() bool {
		names := map[string]bool{}
		for _, s := range rec.Ended() {
			names[s.Name()] = true
		}
		return names["pipeline.encode"] && names["pipeline.spool.write"] && names["pipeline.insert"] && names["pipeline.consume"]
	})
}

type alienRecord struct{ m Meta }

func (a *alienRecord) Kind() Kind  { return Kind(200) }
func (a *alienRecord) Meta() *Meta { return &a.m }

func TestAppendRefusesNilAndUnknownRecords(t *testing.T) {
	p, _ := start(t, testConfig(t), newFakeInserter(), nil)
	if err := p.Append(context.Background(), tunnels(0, 1)[0], nil); err == nil || !strings.Contains(err.Error(), "record 1 of 2 is nil") {
		t.Errorf("Append with a nil record = %v, want an error naming it", err)
	}
	if err := p.Append(context.Background(), &alienRecord{}); err == nil || !strings.Contains(err.Error(), "unknown record kind 200") {
		t.Errorf("Append of an unknown kind = %v, want an error naming it", err)
	}
	if got := testutil.ToFloat64(p.m.accepted.WithLabelValues("tunnel_stat")); got != 0 {
		t.Errorf("accepted = %v after refused calls, want 0", got)
	}
}
