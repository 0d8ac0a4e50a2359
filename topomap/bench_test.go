package topomap

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// scale is the benchmark topology: 100 sites with a cluster each and 9,800 nodes
// (10,000 map nodes), joined by 50,000 WireGuard tunnels.
type scale struct {
	inv     *inventory.Inventory
	tunnels [][2]int // node index pairs
}

func newScale() *scale {
	rng := rand.New(rand.NewPCG(7, 7))
	s := &scale{inv: &inventory.Inventory{}}
	const sites, nodes, tunnels = 100, 9800, 50000
	for i := range sites {
		name := fmt.Sprintf("s%03d", i)
		s.inv.Sites = append(s.inv.Sites, inventory.Site{Name: name, Lat: rng.Float64()*110 - 45, Lon: rng.Float64()*330 - 165})
		s.inv.Clusters = append(s.inv.Clusters, inventory.Cluster{Name: "c" + name, Site: name})
	}
	for i := range nodes {
		site := s.inv.Sites[i%sites].Name
		s.inv.Nodes = append(s.inv.Nodes, inventory.Node{Name: fmt.Sprintf("n%05d", i), Site: site, Cluster: "c" + site})
	}
	seen := map[[2]int]bool{}
	for len(s.tunnels) < tunnels {
		a, b := rng.IntN(nodes), rng.IntN(nodes)
		if a == b {
			continue
		}
		a, b = min(a, b), max(a, b)
		if !seen[[2]int{a, b}] {
			seen[[2]int{a, b}] = true
			s.tunnels = append(s.tunnels, [2]int{a, b})
		}
	}
	return s
}

func (s *scale) record(i int, status string) *pipeline.TunnelStat {
	a, b := s.inv.Nodes[s.tunnels[i][0]], s.inv.Nodes[s.tunnels[i][1]]
	return &pipeline.TunnelStat{M: pipeline.Meta{Time: time.Now(), Site: a.Site, Cluster: a.Cluster, Node: a.Name}, Interface: "wg0",
		PeerNode: b.Name, PeerSite: b.Site, Status: status, RxRate: float64(i % 1000 * 1000), TxRate: 5e4, LastHandshake: time.Now()}
}

func (s *scale) edgeID(i int) string {
	return "tunnel:node:" + s.inv.Nodes[s.tunnels[i][0]].Name + "|node:" + s.inv.Nodes[s.tunnels[i][1]].Name
}

// load starts the map with every tunnel reported once, then feeds updates at rate per
// second (in batches every 10 ms) until ctx ends, calling sent with each batch.
func (s *scale) load(_ testing.TB, ctx context.Context, m *Map, rate int, sent func(ids []int, at time.Time)) *sync.WaitGroup {
	all := make([]pipeline.Record, 0, len(s.tunnels))
	for i := range s.tunnels {
		all = append(all, s.record(i, pipeline.StatusOK))
	}
	m.Consume(all)
	m.tick()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		// Each batch makes up for ticks the scheduler dropped (at most 2x the rate, 100 ms
		// of backlog), so the rate holds on a busy machine without bursts.
		start, done := time.Now(), 0
		statuses := []string{pipeline.StatusOK, pipeline.StatusOK, pipeline.StatusOK, pipeline.StatusDegraded, pipeline.StatusDown}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			target := int(time.Since(start).Seconds() * float64(rate))
			done = max(done, target-rate/10) // a backlog older than 100 ms is dropped, not burst
			per := min(target-done, rate/50)
			done += per
			ids := make([]int, per)
			recs := make([]pipeline.Record, per)
			for j := range per {
				ids[j] = rng.IntN(len(s.tunnels))
				recs[j] = s.record(ids[j], statuses[rng.IntN(len(statuses))])
			}
			at := time.Now()
			if sent != nil {
				sent(ids, at)
			}
			m.Consume(recs)
		}
	}()
	return &wg
}

// discardClient reads and drops every message, as a browser that keeps up would.
func discardClient(b *testing.B, url string) *websocket.Conn {
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		b.Fatal(err)
	}
	c.WriteJSON(clientMsg{Type: "hello"})
	go func() {
		for {
			_, r, err := c.NextReader()
			if err != nil {
				return
			}
			io.Copy(io.Discard, r)
		}
	}()
	return c
}

// BenchmarkTopomapUpdateP99: 10,000 nodes, 50,000 edges, 10,000 tunnel updates/s; the
// time from Consume to a client holding the delta with that edge, over 10 s, with 10
// clients connected (one measuring, nine reading). Target p99 <= 1 s.
func BenchmarkTopomapUpdateP99(b *testing.B) {
	s := newScale()
	cfg := testConfig()
	cfg.Anonymous = true
	m, srv := startMap(b, cfg, s.inv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	pending := map[string]time.Time{} // edge -> first unacknowledged update
	var measuring atomic.Bool         // set once the measuring client holds its snapshot
	var sent atomic.Int64
	wg := s.load(b, ctx, m, 10000, func(ids []int, at time.Time) {
		if !measuring.Load() {
			return
		}
		sent.Add(int64(len(ids)))
		mu.Lock()
		for _, i := range ids {
			id := s.edgeID(i)
			if _, ok := pending[id]; !ok {
				pending[id] = at
			}
		}
		mu.Unlock()
	})
	for range 9 {
		defer discardClient(b, wsURL(srv)).Close()
	}
	c, _, err := websocket.DefaultDialer.Dial(wsURL(srv), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.WriteJSON(clientMsg{Type: "hello"})
	// The measuring client finds the tunnels in each message by their id prefix instead
	// of decoding 750 kB of JSON four times a second, which would measure encoding/json
	// in this (shared) process rather than the map. A snapshot (sent if it ever falls
	// behind) delivers every pending update.
	idPrefix := []byte(`"id":"tunnel:`)
	var lat []time.Duration
	snapshots := 0
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, first, err := c.ReadMessage(); err != nil || !bytes.HasPrefix(first, []byte(`{"type":"snapshot"`)) {
		b.Fatalf("first message: %v", err)
	}
	measuring.Store(true)
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := c.ReadMessage()
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		mu.Lock()
		if bytes.HasPrefix(data, []byte(`{"type":"snapshot"`)) {
			snapshots++
			for id, at := range pending {
				lat = append(lat, now.Sub(at))
				delete(pending, id)
			}
		}
		for rest := data; ; {
			i := bytes.Index(rest, idPrefix)
			if i < 0 {
				break
			}
			rest = rest[i+len(`"id":"`):]
			id := string(rest[:bytes.IndexByte(rest, '"')])
			if at, ok := pending[id]; ok {
				lat = append(lat, now.Sub(at))
				delete(pending, id)
			}
		}
		mu.Unlock()
	}
	cancel()
	wg.Wait()
	if len(lat) < 10000 {
		b.Fatalf("only %d updates measured", len(lat))
	}
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	b.ReportMetric(float64(p99.Milliseconds()), "p99_ms")
	fmt.Printf("topomap: %d updates sent (%.0f/s achieved), %d delivered, p50 %v p99 %v max %v, %d resyncs\n",
		sent.Load(), float64(sent.Load())/time.Since(start).Seconds(), len(lat), lat[len(lat)/2], p99, lat[len(lat)-1], snapshots)
	var hm dto.Metric
	m.metrics.delay.Write(&hm)
	fmt.Printf("topomap: server side, change to publish: mean %.0f ms over %d deltas\n",
		1000*hm.GetHistogram().GetSampleSum()/float64(hm.GetHistogram().GetSampleCount()), hm.GetHistogram().GetSampleCount())
	fmt.Printf("BENCH topomap_update_p99 %d ms ratio=%.3f\n", p99.Milliseconds(), float64(p99)/float64(time.Second))
}

func rssBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkTopomapRSS100Clients: the same graph and update rate, process RSS with 100
// websocket clients connected for 8 s, against the RSS with none (the baseline).
func BenchmarkTopomapRSS100Clients(b *testing.B) {
	debug.FreeOSMemory() // earlier benchmarks in this process must not inflate the baseline
	s := newScale()
	cfg := testConfig()
	cfg.Anonymous = true
	m, srv := startMap(b, cfg, s.inv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	wg := s.load(b, ctx, m, 10000, nil)
	sample := func(d time.Duration) int64 {
		var peak int64
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			peak = max(peak, rssBytes(b))
		}
		return peak
	}
	base := sample(4 * time.Second)
	var conns []*websocket.Conn
	for range 100 {
		conns = append(conns, discardClient(b, wsURL(srv)))
	}
	with := sample(8 * time.Second)
	// Live heap after a collection tells retained memory from GC headroom in the RSS.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	clients := m.hub.clientCount()
	cancel()
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	if clients != 100 {
		b.Fatalf("%d clients connected, want 100", clients)
	}
	fmt.Printf("topomap: RSS %d MiB with no client, %d MiB with 100 (live heap %d MiB; %d snapshots sent, %d slow-client resyncs)\n",
		base>>20, with>>20, ms.HeapAlloc>>20, int(testutil.ToFloat64(m.metrics.snapshots)), int(testutil.ToFloat64(m.metrics.slow)))
	fmt.Printf("BENCH topomap_rss_100_clients %d MiB ratio=%.3f\n", with>>20, float64(with)/float64(base))
}

// BenchmarkTopomapBrowser: Chromium opens the page on the 10,000-node, 50,000-edge graph
// while 10,000 updates/s flow; reports time to first render (baseline: the 5-site lab
// in the same run) and the pan/zoom frame rate (target 30 fps).
func BenchmarkTopomapBrowser(b *testing.B) {
	requireBrowser(b)
	lab, labSrv := startMap(b, testConfig(), labInventory(), nil)
	lab.Consume(labRecords(time.Now()))
	lab.tick()
	small := runNode(b, 60*time.Second, "web/e2e/bench.mjs", labSrv.URL+"/map/?token="+testToken, "0")["result"]

	s := newScale()
	m, srv := startMap(b, testConfig(), s.inv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	wg := s.load(b, ctx, m, 10000, nil)
	shot := filepath.Join(artifactsDir(b), "scale-10k.png")
	res := runNode(b, 90*time.Second, "web/e2e/bench.mjs", srv.URL+"/map/?token="+testToken, "240", shot)["result"]
	cancel()
	wg.Wait()
	if res == nil || small == nil {
		b.Fatal("bench script gave no result")
	}
	j, _ := json.Marshal(res)
	fmt.Printf("topomap browser: %s\n", j)
	first, fps := res["firstRenderMs"].(float64), res["fps"].(float64)
	fmt.Printf("BENCH topomap_first_render %.0f ms ratio=%.3f\n", first, first/small["firstRenderMs"].(float64))
	fmt.Printf("BENCH topomap_fps %.1f fps ratio=%.3f\n", fps, fps/30)
}
