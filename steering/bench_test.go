package steering

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/miekg/dns"

	"github.com/meridianhq/meridian/collectors/geodns"
	"github.com/meridianhq/meridian/internal/testlog"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
)

// dnsperfRun runs dnsperf (one UDP client, as in RECIPES.md) against the server at addr,
// process pid, for secs seconds; it returns the measured queries per second and the
// server's CPU time per answered query. Every query carries an ECS option for
// 216.160.83.0/24 (US in the MaxMind test database), so our server runs the full geo
// path: GeoIP lookup, region, weighted pick.
func dnsperfRun(b *testing.B, addr string, pid int, queries string, secs int) (qps float64, cpu time.Duration) {
	b.Helper()
	host, port, _ := net.SplitHostPort(addr)
	before := threadsCPU(b, pid)
	// ECS option 8: family 1, source /24, scope 0, address 216.160.83.
	out, err := exec.Command(needBinary(b, "dnsperf", "dnsperf"), "-s", host, "-p", port, "-d", queries,
		"-l", strconv.Itoa(secs), "-E", "8:00011800d8a053").CombinedOutput()
	if err != nil {
		b.Fatalf("dnsperf: %v\n%s", err, out)
	}
	used := threadsCPU(b, pid) - before
	m := regexp.MustCompile(`Queries per second:\s+([0-9.]+)`).FindSubmatch(out)
	done := regexp.MustCompile(`Queries completed:\s+(\d+)`).FindSubmatch(out)
	lost := regexp.MustCompile(`Queries lost:\s+(\d+)`).FindSubmatch(out)
	if m == nil || done == nil || lost == nil {
		b.Fatalf("no qps in dnsperf output:\n%s", out)
	}
	qps, _ = strconv.ParseFloat(string(m[1]), 64)
	n, _ := strconv.Atoi(string(done[1]))
	cpu = used / time.Duration(max(n, 1))
	b.Logf("dnsperf %s: %.0f qps, lost %s, server CPU %.2f µs/query", addr, qps, lost[1], float64(cpu)/1e3)
	return qps, cpu
}

// threadsCPU is the CPU time all of pid's threads have used so far, from the scheduler's
// nanosecond accounting (clock ticks are too coarse for a few seconds' run).
func threadsCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(stats) == 0 {
		b.Fatalf("no scheduler statistics for process %d: %v", pid, err)
	}
	var sum time.Duration
	for _, p := range stats {
		var ns int64
		if data, err := os.ReadFile(p); err == nil { // a thread may end meanwhile
			fmt.Sscan(string(data), &ns)
		}
		sum += time.Duration(ns)
	}
	return sum
}

// startGdnsd serves a static example.net zone with the same answer as ours; it returns
// the address and gdnsd's process.
func startGdnsd(b *testing.B) (string, int) {
	b.Helper()
	gdnsd := needBinary(b, "gdnsd", "gdnsd")
	dir := b.TempDir()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	os.MkdirAll(filepath.Join(dir, "zones"), 0o755)
	os.MkdirAll(filepath.Join(dir, "run"), 0o755)
	os.MkdirAll(filepath.Join(dir, "state"), 0o755)
	conf := fmt.Sprintf("options => {\n  listen => [ %s ]\n  run_dir => %s\n  state_dir => %s\n  udp_threads => 1\n  tcp_threads => 1\n}\n", addr, filepath.Join(dir, "run"), filepath.Join(dir, "state"))
	zone := "$TTL 30\n@ SOA ns1 hostmaster 1 3600 600 86400 30\n@ NS ns1\nns1 A 127.0.0.53\napi A 127.0.1.2\n"
	os.WriteFile(filepath.Join(dir, "config"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(dir, "zones", "example.net"), []byte(zone), 0o644)
	cmd := exec.Command(gdnsd, "-c", dir, "start")
	var logs testlog.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	wait.For(b, 15*time.Second, "gdnsd to answer", func() error {
		r, err := dns.Exchange(question("api.example.net.", dns.TypeA), addr)
		if err == nil && r.Rcode != dns.RcodeSuccess {
			err = fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
		}
		if err != nil {
			return fmt.Errorf("%w; gdnsd's log:\n%s", err, logs.String())
		}
		return nil
	})
	return addr, cmd.Process.Pid
}

// BenchmarkGeoDNSQPS compares the built-in GeoDNS (geo + weights on) with gdnsd serving a
// static zone, same machine, same run, same dnsperf load: queries per second, and the
// server's CPU time per query, which the placement of dnsperf's and the server's threads
// on the two cores moves much less than it moves qps.
func BenchmarkGeoDNSQPS(b *testing.B) {
	queries := filepath.Join(b.TempDir(), "queries")
	os.WriteFile(queries, []byte("api.example.net A\n"), 0o644)
	cfg := testConfig(b)
	// The engine re-ranks at the shipped interval, not the tests' fast one: it runs in the
	// process whose CPU is measured.
	var shipped Config
	shipped.RegisterFlags(flag.NewFlagSet("defaults", flag.PanicOnError))
	cfg.TickInterval = shipped.TickInterval
	_, ours := startSteering(b, cfg, testInventory(), &recorder{})
	r, err := dns.Exchange(question("api.example.net.", dns.TypeA), ours)
	if err != nil || len(r.Answer) != 1 {
		b.Fatalf("our server does not answer: %v %v", r, err)
	}
	theirs, gdnsdPID := startGdnsd(b)
	b.ResetTimer()
	// Interleaved rounds, the side going first alternating. Each round pairs one run of
	// each side a few seconds apart, so a slow drift of the shared machine cancels out of
	// the round's ratio, and the median over rounds ignores a burst of other load in any
	// one run. (The best qps of each side, used before, let one lucky run decide: one
	// benchmark run printed 0.92 where the means of its rounds gave 0.97, gdnsd's best
	// run being 9% above its mean.)
	var qpsRatios, cpuRatios []float64
	var oursQPS []float64
	var oursCPU []time.Duration
	for range b.N {
		for round := range geodnsRounds {
			var theirQPS float64
			var theirCPU time.Duration
			if round%2 == 0 {
				theirQPS, theirCPU = dnsperfRun(b, theirs, gdnsdPID, queries, 4)
			}
			qps, cpu := dnsperfRun(b, ours, os.Getpid(), queries, 4)
			if round%2 == 1 {
				theirQPS, theirCPU = dnsperfRun(b, theirs, gdnsdPID, queries, 4)
			}
			oursQPS, oursCPU = append(oursQPS, qps), append(oursCPU, cpu)
			qpsRatios = append(qpsRatios, qps/theirQPS)
			cpuRatios = append(cpuRatios, float64(cpu)/float64(theirCPU))
		}
	}
	b.StopTimer()
	b.Logf("qps ratio per round: %.3f", qpsRatios)
	b.Logf("CPU per query ratio per round: %.3f", cpuRatios)
	fmt.Printf("BENCH geodns_cpu_per_query %.2f µs ratio=%.2f\n", float64(median(oursCPU))/1e3, median(cpuRatios))
	fmt.Printf("BENCH geodns_qps %.0f qps ratio=%.2f\n", median(oursQPS), median(qpsRatios))
}

// geodnsRounds is how many paired runs BenchmarkGeoDNSQPS makes: a run's qps moves by
// ±15% with where the scheduler puts the threads, the median of 7 pairs by a few %.
const geodnsRounds = 7

func median[T time.Duration | float64](v []T) T {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// BenchmarkSteerDetect measures detection-to-steer time with 1 s probes: from stopping a
// POP's endpoint to the built-in GeoDNS answering its region with the next POP, over
// repeated stop/restore cycles through the whole loop (prober -> records -> engine -> DNS).
func BenchmarkSteerDetect(b *testing.B) {
	const cycles = 8
	inv := testInventory()
	pops := map[string]*popServer{}
	for i := range inv.POPs {
		p := &inv.POPs[i]
		pops[p.Name] = startPOP(b, p.VIPs[0])
		p.TCPAddr = pops[p.Name].addr
		p.HealthURL = "http://" + pops[p.Name].addr + "/healthz"
	}
	cfg := testConfig(b)
	cfg.MinHold = 0 // restore between cycles without waiting; detection is what is measured
	cfg.RampInterval = 50 * time.Millisecond
	cfg.RampStep = 1
	rec := &recorder{}
	st, addr := startSteering(b, cfg, inv, rec)
	rec.mu.Lock()
	rec.consumer = st
	rec.mu.Unlock()
	var pcfg geodns.Config
	pcfg.RegisterFlags(flag.NewFlagSet("probe", flag.PanicOnError))
	pcfg.Vantages, pcfg.ICMP = geodns.Vantages{{Site: "lab"}}, false
	prober, err := geodns.New(pcfg, geodns.Deps{Logger: discard(), Registerer: newTestRegistry(), Appender: rec, Inventory: inventory.Static(inv)})
	if err != nil {
		b.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), prober); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), prober) })
	france := "2a02:cfc0::/32"
	b.ResetTimer()
	var samples []time.Duration
	for range b.N {
		for range cycles {
			wait.Until(b, 20*time.Second, "france on nbg", func() bool { return answer(b, addr, france) == "127.0.1.1" })
			start := time.Now()
			pops["nbg"].stop()
			wait.Until(b, 20*time.Second, "france moved to nyc", func() bool { return answer(b, addr, france) == "127.0.1.2" })
			samples = append(samples, time.Since(start))
			pops["nbg"].start(b)
		}
	}
	b.StopTimer()
	slices.Sort(samples)
	p50 := samples[len(samples)/2]
	p99 := samples[len(samples)-1] // with 8 samples the maximum bounds the 99th percentile
	b.Logf("detect-to-steer samples: %v", samples)
	fmt.Printf("BENCH steer_detect_p50 %.2f s ratio=%.2f\n", p50.Seconds(), p50.Seconds()/1.5)
	fmt.Printf("BENCH steer_detect_p99 %.2f s ratio=%.2f\n", p99.Seconds(), p99.Seconds()/3)
}
