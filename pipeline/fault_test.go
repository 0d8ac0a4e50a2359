package pipeline_test

import (
	"github.com/meridianhq/meridian/internal/promtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"

	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
)

// childEnv makes the test binary act as the process that TestKill9 kills (see TestMain).
const childEnv = "MERIDIAN_PIPELINE_KILL_CHILD_SPOOL"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		killChild(dir)
		return
	}
	os.Exit(m.Run())
}

// faultyInserter wraps the real store: down fails before inserting (storage unreachable);
// lostAcks makes that many successful inserts report an error (the ack was lost), so the
// pipeline re-sends blocks that are already stored.
type faultyInserter struct {
	next     pipeline.Inserter
	down     atomic.Bool
	lostAcks atomic.Int32
}

func (f *faultyInserter) Insert(ctx context.Context, b pipeline.Block) error {
	if f.down.Load() {
		return errors.New("fault injected: dial tcp 127.0.0.1:9000: connection refused")
	}
	err := f.next.Insert(ctx, b)
	if err == nil && f.lostAcks.Add(-1) >= 0 {
		return errors.New("fault injected: connection reset after the insert (ack lost)")
	}
	return err
}

func faultConfig(spool string) pipeline.Config {
	var cfg pipeline.Config
	cfg.RegisterFlags(flag.NewFlagSet("fault", flag.PanicOnError))
	cfg.Instance = "fault-test"
	cfg.BatchRows = 1000
	cfg.BatchAge = 20 * time.Millisecond
	cfg.Retry.MinBackoff = 10 * time.Millisecond
	cfg.Retry.MaxBackoff = 200 * time.Millisecond
	cfg.ShutdownTimeout = time.Second
	cfg.Spool.Path = spool
	return cfg
}

func logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func startPipeline(t testing.TB, cfg pipeline.Config, ins pipeline.Inserter, reg prometheus.Registerer) *pipeline.Pipeline {
	t.Helper()
	p, err := pipeline.New(cfg, pipeline.Deps{Encoder: storage.NewEncoder(), Inserter: ins, Logger: logger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), p) })
	return p
}

func appendRange(t testing.TB, p pipeline.Appender, from, to int, kinds ...string) {
	t.Helper()
	const chunk = 500
	for i := from; i < to; i += chunk {
		var recs []pipeline.Record
		for j := i; j < min(i+chunk, to); j++ {
			for _, k := range kinds {
				if k == "flow" {
					recs = append(recs, flow(j))
				} else {
					recs = append(recs, tunnel(j))
				}
			}
		}
		if err := p.Append(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
	}
}

func query(t testing.TB, s *storage.Store, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := s.Query(ctx, sql, "TabSeparated")
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return strings.TrimSpace(string(out))
}

// checkExactlyOnce compares what a table holds with ids 0..n-1 appended once each: count,
// distinct ids, id range and a checksum the engine computes over numbers(n).
func checkExactlyOnce(t testing.TB, s *storage.Store, kind string, n int) {
	t.Helper()
	table, id, hashed := "flows", "l7_latency", "cityHash64(http_path, l7_latency)"
	want := fmt.Sprintf("SELECT %d, %d, 0, %d, sum(cityHash64(concat('/p/', toString(number)), toInt64(number))) FROM numbers(%d)", n, n, n-1, n)
	if kind == "tunnel_stat" {
		table, id, hashed = "tunnel_stats", "rx_bytes", "cityHash64(rx_bytes, node, public_key)"
		want = fmt.Sprintf("SELECT %d, %d, 0, %d, sum(cityHash64(number, concat('node-', toString(number %% 64)), concat('pk-', toString(number %% 1000)))) FROM numbers(%d)", n, n, n-1, n)
	}
	got := query(t, s, fmt.Sprintf("SELECT count(), uniqExact(%s), min(%s), max(%s), sum(%s) FROM %s", id, id, id, hashed, table))
	if exp := query(t, s, want); got != exp {
		t.Errorf("%s: stored (count, distinct, min, max, checksum) = %s, appended %s", table, got, exp)
	}
}

// TestFaultEmbeddedOutage: storage fails for a while, then comes back losing some acks;
// every record is stored exactly once, in the tables and in the rollup fed by a view.
func TestFaultEmbeddedOutage(t *testing.T) {
	store := storagetest.New(t)
	reg := prometheus.NewRegistry()
	f := &faultyInserter{next: store}
	f.down.Store(true)
	p := startPipeline(t, faultConfig(t.TempDir()), f, reg)

	const n = 20000
	appendRange(t, p, 0, n, "flow", "tunnel_stat")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Every block waits in the spool and /metrics shows the backlog.
	const blocks = 2 * n / 1000
	if got := promtest.Sum(t, reg, "meridian_pipeline_spool_blocks"); got != blocks {
		t.Errorf("meridian_pipeline_spool_blocks = %v during the outage, want %d", got, blocks)
	}
	if got := promtest.Sum(t, reg, "meridian_pipeline_spool_bytes"); got <= 0 {
		t.Errorf("meridian_pipeline_spool_bytes = %v during the outage, want > 0", got)
	}
	wait.Until(t, 10*time.Second, "failed inserts to show", func() bool { return promtest.Sum(t, reg, "meridian_pipeline_blocks_failed_total") >= 2 })
	if got := query(t, store, "SELECT count() FROM flows"); got != "0" {
		t.Fatalf("flows holds %s rows while storage is down", got)
	}

	f.lostAcks.Store(6)
	f.down.Store(false)
	wait.Until(t, 2*time.Minute, "the spool to drain", func() bool { return promtest.Sum(t, reg, "meridian_pipeline_spool_blocks") == 0 })
	if f.lostAcks.Load() >= 0 {
		t.Fatalf("only %d of 6 lost acks happened", 6-f.lostAcks.Load())
	}
	checkExactlyOnce(t, store, "flow", n)
	checkExactlyOnce(t, store, "tunnel_stat", n)
	if got := promtest.Sum(t, reg, "meridian_pipeline_rows_inserted_total"); got != 2*n {
		t.Errorf("meridian_pipeline_rows_inserted_total = %v, want %d", got, 2*n)
	}
}

// TestFaultServerClosedPort: the server driver against a closed port fails every insert;
// blocks wait in the spool; a restart on the same spool with a working store drains them
// exactly once.
func TestFaultServerClosedPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	scfg := storagetest.Config(t)
	scfg.ClickHouse.DSN = "clickhouse://" + addr + "/?dial_timeout=200ms"
	scfg.ClickHouse.DialTimeout = 200 * time.Millisecond
	server, err := storage.New(scfg, storage.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	spool := t.TempDir()
	reg := prometheus.NewRegistry()
	cfg := faultConfig(spool)
	cfg.ShutdownTimeout = 0
	p := startPipeline(t, cfg, server, reg)
	const n = 5000
	appendRange(t, p, 0, n, "flow")
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 30*time.Second, "inserts to the closed port to fail", func() bool { return promtest.Sum(t, reg, "meridian_pipeline_blocks_failed_total") >= 2 })
	if got := promtest.Sum(t, reg, "meridian_pipeline_spool_blocks"); got != n/1000 {
		t.Errorf("meridian_pipeline_spool_blocks = %v, want %d", got, n/1000)
	}
	if err := services.StopAndAwaitTerminated(context.Background(), p); err != nil {
		t.Fatal(err)
	}

	store := storagetest.New(t)
	reg2 := prometheus.NewRegistry()
	startPipeline(t, faultConfig(spool), store, reg2)
	wait.Until(t, time.Minute, "the spool to drain", func() bool { return promtest.Sum(t, reg2, "meridian_pipeline_spool_blocks") == 0 })
	checkExactlyOnce(t, store, "flow", n)
}

// TestKill9: a child process appends with storage down until its spool holds a backlog,
// and is killed with SIGKILL, while it writes a spool file when the timing allows. A new pipeline on the same spool drains
// every spooled block once: nothing flushed is lost, nothing is stored twice.
func TestKill9(t *testing.T) {
	spool := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+spool)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	flushed := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "FLUSHED\n" {
			err = fmt.Errorf("child said %q", line)
		}
		flushed <- err
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("child never flushed")
	}
	// Let it keep spooling past the flushed part, then kill it without warning.
	wait.Until(t, time.Minute, "the child to spool more blocks", func() bool {
		files, _ := filepath.Glob(filepath.Join(spool, "*.blk"))
		return len(files) >= killFlushed/killBatch+20
	})
	// Aim the kill at a spool write in progress (a .tmp file present), to leave a torn file.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if tmps, _ := filepath.Glob(filepath.Join(spool, "*.tmp")); len(tmps) > 0 {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	var spooledRows, tmp int
	files, _ := filepath.Glob(filepath.Join(spool, "*.blk"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || len(data) < 13 {
			t.Fatalf("%s: %v (%d bytes): a renamed spool file must be complete", f, err, len(data))
		}
		spooledRows += int(binary.LittleEndian.Uint32(data[9:13])) // rows, after magic and kind
	}
	tmps, _ := filepath.Glob(filepath.Join(spool, "*.tmp"))
	tmp = len(tmps)
	t.Logf("after SIGKILL: %d blocks (%d rows) spooled, %d torn .tmp files", len(files), spooledRows, tmp)
	if spooledRows < killFlushed {
		t.Fatalf("spool holds %d rows, fewer than the %d flushed before the kill", spooledRows, killFlushed)
	}

	store := storagetest.New(t)
	reg := prometheus.NewRegistry()
	startPipeline(t, faultConfig(spool), store, reg)
	wait.Until(t, 2*time.Minute, "the spool to drain", func() bool { return promtest.Sum(t, reg, "meridian_pipeline_spool_blocks") == 0 })
	if got := promtest.Sum(t, reg, "meridian_pipeline_spool_corrupt_files_total"); got != float64(tmp) {
		t.Errorf("meridian_pipeline_spool_corrupt_files_total = %v, want the %d torn files reported", got, tmp)
	}
	// Blocks are spooled in order, so what is stored is ids 0..spooledRows-1, each once.
	checkExactlyOnce(t, store, "flow", spooledRows)
}

const (
	killFlushed = 5000
	killBatch   = 500
)

// killChild runs in the child process of TestKill9: storage is down, blocks pile up in the
// spool; it reports once killFlushed records are durable and keeps appending until killed.
func killChild(spool string) {
	cfg := faultConfig(spool)
	cfg.BatchRows = killBatch
	cfg.BatchAge = 5 * time.Millisecond
	cfg.Retry.MinBackoff = time.Second
	cfg.Retry.MaxBackoff = time.Second
	cfg.Spool.MaxBytes = 256 << 20
	down := &faultyInserter{}
	down.down.Store(true)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	p, err := pipeline.New(cfg, pipeline.Deps{Encoder: storage.NewEncoder(), Inserter: down, Logger: log, Registerer: prometheus.NewRegistry()})
	if err == nil {
		err = services.StartAndAwaitRunning(context.Background(), p)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "kill child:", err)
		os.Exit(2)
	}
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	for i := 0; ; i += 100 {
		recs := make([]pipeline.Record, 100)
		for j := range recs {
			recs[j] = flow(i + j)
		}
		if err := p.Append(ctx, recs...); err != nil {
			fail(err)
		}
		if i+100 == killFlushed {
			if err := p.Flush(ctx); err != nil {
				fail(err)
			}
			fmt.Println("FLUSHED")
		}
	}
}
