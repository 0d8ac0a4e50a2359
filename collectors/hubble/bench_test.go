package hubble

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/cilium/api/v1/observer"
	"github.com/grafana/dskit/services"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meridianhq/meridian/pipeline"
)

// replay is a relay that streams the real samples over and over, re-timed so that the
// whole stream spans a few seconds of recent time (inside the tables' TTL).
type replay struct {
	observer.UnimplementedObserverServer
	samples []*observer.GetFlowsResponse
	total   int
	base    time.Time
	step    time.Duration
}

func (r *replay) GetFlows(_ *observer.GetFlowsRequest, stream grpc.ServerStreamingServer[observer.GetFlowsResponse]) error {
	for i := range r.total {
		m := r.samples[i%len(r.samples)]
		ts := timestamppb.New(r.base.Add(time.Duration(i) * r.step))
		m.Time, m.GetFlow().Time = ts, ts // Send marshals before returning: safe to reuse
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	<-stream.Context().Done() // follow: stay open like a relay
	return nil
}

func serveReplay(b *testing.B, r *replay) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := grpc.NewServer()
	observer.RegisterObserverServer(s, r)
	go s.Serve(l)
	b.Cleanup(s.Stop)
	return l.Addr().String()
}

func benchSamples(b *testing.B) []*observer.GetFlowsResponse {
	entries, err := os.ReadDir(samples)
	if err != nil {
		b.Fatal(err)
	}
	var all []*observer.GetFlowsResponse
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			all = append(all, load(b, e.Name())...)
		}
	}
	return all
}

// BenchmarkHubble measures flows/s from a local relay replaying the real samples through
// the collector (decode, parse, edges), the pipeline and the embedded ClickHouse insert,
// against a bare client that only receives and decodes the same stream.
func BenchmarkHubble(b *testing.B) {
	const total = 500_000
	smp := benchSamples(b)
	newReplay := func() *replay {
		return &replay{samples: smp, total: total, base: time.Now().Add(-time.Minute).Truncate(time.Second), step: 10 * time.Microsecond}
	}

	// Baseline: receive and decode only.
	start, cpu0 := time.Now(), cpuTime()
	conn, err := grpc.NewClient(serveReplay(b, newReplay()), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := observer.NewObserverClient(conn).GetFlows(ctx, &observer.GetFlowsRequest{Follow: true})
	if err != nil {
		b.Fatal(err)
	}
	for n := 0; n < total; n++ {
		if _, err := stream.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	bare := total / time.Since(start).Seconds()
	bareCPU := cpuTime() - cpu0
	cancel()
	conn.Close()

	// The collector alone (decode, parse, edges) into an Appender that discards: where the
	// collector's own cost ends and the store's begins.
	start, cpu0 = time.Now(), cpuTime()
	discard := pipeline.AppenderFunc(func(context.Context, ...pipeline.Record) error { return nil })
	c, reg := startCollector(b, testConfig(RelayConfig{Cluster: "bench", Address: serveReplay(b, newReplay())}), discard, nil)
	for metric(b, reg, "meridian_hubble_flows_received_total", "bench") < total {
		time.Sleep(10 * time.Millisecond)
	}
	alone, aloneCPU := total/time.Since(start).Seconds(), cpuTime()-cpu0
	services.StopAndAwaitTerminated(context.Background(), c)

	// Full path, stored and readable in ClickHouse.
	p, store := startPipeline(b, time.Second) // blocks of up to 50,000 rows
	cfg := testConfig(RelayConfig{Cluster: "bench", Address: serveReplay(b, newReplay())})
	b.ResetTimer()
	start, cpu0 = time.Now(), cpuTime()
	_, reg = startCollector(b, cfg, p, nil)
	for metric(b, reg, "meridian_hubble_flows_received_total", "bench") < total {
		time.Sleep(10 * time.Millisecond)
	}
	received := time.Since(start)
	if err := p.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	for query(b, store, "SELECT count() FROM {db}.flows") != fmt.Sprint(total) {
		time.Sleep(20 * time.Millisecond)
	}
	full := total / time.Since(start).Seconds()
	fullCPU := cpuTime() - cpu0
	b.StopTimer()
	// Edges of the last seconds are emitted once the stream is idle for interval+grace.
	for query(b, store, "SELECT sum(flows) FROM {db}.flow_edges") != fmt.Sprint(total) {
		time.Sleep(50 * time.Millisecond)
	}
	edges := query(b, store, "SELECT count(), sum(flows) FROM {db}.flow_edges")

	fmt.Printf("bare client (receive+decode): %.0f flows/s\n", bare)
	fmt.Printf("collector received all in %v; stored in ClickHouse: %.0f flows/s; edges (rows, flows): %s\n", received, full, edges)
	fmt.Printf("collector alone (discarding appender): %.0f flows/s, ratio %.2f\n", alone, alone/bare)
	fmt.Printf("process CPU per flow (relay side included): bare %.1f µs, collector alone %.1f µs, full %.1f µs\n",
		bareCPU.Seconds()*1e6/total, aloneCPU.Seconds()*1e6/total, fullCPU.Seconds()*1e6/total)
	fmt.Printf("peak RSS (VmHWM): %s\n", vmHWM())
	b.ReportMetric(full, "flows/s")
	fmt.Printf("BENCH hubble_flows %.0f flows/s ratio=%.2f\n", full, full/bare)
}

// cpuTime is the process's user+system CPU time, chDB's threads included.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func vmHWM() string {
	s, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(s), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	return "unknown"
}
