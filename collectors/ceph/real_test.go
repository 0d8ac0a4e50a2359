package ceph

import (
	"github.com/meridianhq/meridian/collectors/scrape"
	"github.com/meridianhq/meridian/internal/proc"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"

	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// cluster is a real single-host Ceph Pacific cluster (1 mon, 1 mgr, 3 BlueStore OSDs on
// sparse files) living in a temp dir, on loopback ports picked free.
type cluster struct {
	t       *testing.T
	ctx     context.Context
	dir     string
	conf    string
	metrics string // the mgr prometheus module's /metrics URL
	mu      sync.Mutex
	procs   map[string]*exec.Cmd
	began   time.Time
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// run runs a command to completion and returns its stdout.
func (c *cluster) run(stdin string, args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("%s: %v: %s %s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func (c *cluster) ceph(args ...string) string {
	c.t.Helper()
	return c.run("", append([]string{"ceph", "-c", c.conf, "--connect-timeout", "20"}, args...)...)
}

// retry runs a ceph command until it succeeds (daemons still coming up) or d passes.
func (c *cluster) retry(d time.Duration, args ...string) {
	c.t.Helper()
	wait.For(c.t, d, "ceph "+strings.Join(args, " "), func() error {
		ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ceph", append([]string{"-c", c.conf, "--connect-timeout", "10"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
}

// start runs a daemon in the foreground, in its own process group, until stop or cleanup.
func (c *cluster) start(name string, args ...string) {
	c.t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(filepath.Join(c.dir, "log", name+".out"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("%s: %v", name, err)
	}
	c.mu.Lock()
	c.procs[name] = cmd
	c.mu.Unlock()
}

// stop ends a daemon with SIGTERM (SIGKILL after 10 s) and waits for it.
func (c *cluster) stop(name string) {
	c.mu.Lock()
	cmd := c.procs[name]
	delete(c.procs, name)
	c.mu.Unlock()
	if cmd != nil {
		proc.Stop(cmd, 10*time.Second)
	}
}

func (c *cluster) stopAll() {
	c.mu.Lock()
	var names []string
	for n := range c.procs {
		names = append(names, n)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); c.stop(n) }()
	}
	wg.Wait()
}

func requireCeph(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the Ceph daemons need root here")
	}
	for bin, pkg := range map[string]string{"ceph-mon": "ceph-mon", "ceph-mgr": "ceph-mgr", "ceph-osd": "ceph-osd", "ceph": "ceph-common", "rados": "ceph-common", "ceph-authtool": "ceph-common", "monmaptool": "ceph-common"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: install the Debian package %s (make apt-test; ceph-mgr also needs ceph-mgr-modules-core)", bin, pkg)
		}
	}
}

// newCluster builds and starts the cluster and waits for HEALTH_OK.
func newCluster(t *testing.T, ctx context.Context) *cluster {
	d := t.TempDir()
	c := &cluster{t: t, ctx: ctx, dir: d, conf: filepath.Join(d, "ceph.conf"), procs: map[string]*exec.Cmd{}, began: time.Now()}
	t.Cleanup(c.stopAll)
	for _, sub := range []string{"run", "log", "mon/ceph-a", "mgr/ceph-x"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fsid := uuid()
	v2, v1, prom := freePort(t), freePort(t), freePort(t)
	c.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", prom)
	conf := fmt.Sprintf(`[global]
fsid = %[1]s
mon host = v2:127.0.0.1:%[2]d/0,v1:127.0.0.1:%[3]d/0
public addr = 127.0.0.1
cluster addr = 127.0.0.1
run dir = %[4]s/run
pid file = %[4]s/run/$name.pid
admin socket = %[4]s/run/$name.asok
log file = %[4]s/log/$name.log
mon data = %[4]s/mon/$cluster-$id
mgr data = %[4]s/mgr/$cluster-$id
osd data = %[4]s/osd/$cluster-$id
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
osd crush chooseleaf type = 0
mon data avail warn = 5
mon data avail crit = 1
mon osd reporter subtree level = osd
osd heartbeat grace = 6
osd heartbeat interval = 1
[mgr]
# Skip loading the optional python modules (all ~25 take 30+ s on a busy machine);
# the always-on ones must stay loadable or health turns to MGR_MODULE_ERROR.
mgr disabled modules = alerts,influx,insights,localpool,mirroring,nfs,osd_perf_query,osd_support,restful,selftest,snap_schedule,stats,telegraf,test_orchestrator,zabbix,diskprediction_local
[client]
keyring = %[4]s/keyring
[osd]
keyring = %[4]s/osd/$cluster-$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 4294967296
osd fast shutdown = false
`, fsid, v2, v1, d)
	if err := os.WriteFile(c.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	monKeyring, adminKeyring := filepath.Join(d, "mon.keyring"), filepath.Join(d, "keyring")
	c.run("", "ceph-authtool", "--create-keyring", monKeyring, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *")
	c.run("", "ceph-authtool", "--create-keyring", adminKeyring, "--gen-key", "-n", "client.admin",
		"--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mds", "allow *", "--cap", "mgr", "allow *")
	c.run("", "ceph-authtool", monKeyring, "--import-keyring", adminKeyring)
	monmap := filepath.Join(d, "monmap")
	c.run("", "monmaptool", "--create", "--addv", "a", fmt.Sprintf("[v2:127.0.0.1:%d,v1:127.0.0.1:%d]", v2, v1), "--fsid", fsid, monmap)
	c.run("", "ceph-mon", "-c", c.conf, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", monKeyring)
	c.start("mon.a", "ceph-mon", "-c", c.conf, "-i", "a", "-f")

	c.ceph("auth", "get-or-create", "mgr.x", "mon", "allow profile mgr", "osd", "allow *", "mds", "allow *", "-o", filepath.Join(d, "mgr/ceph-x/keyring"))
	c.startMgr()
	// The mgr/ options exist once an active mgr has reported its modules.
	c.retry(60*time.Second, "config", "set", "mgr", "mgr/prometheus/server_addr", "127.0.0.1")
	c.ceph("config", "set", "mgr", "mgr/prometheus/server_port", strconv.Itoa(prom))
	// The module refreshes its cache this often; the default 15 s would make the test slow.
	c.ceph("config", "set", "mgr", "mgr/prometheus/scrape_interval", "1")
	c.retry(60*time.Second, "mgr", "module", "enable", "prometheus")
	t.Logf("mon and mgr up at %v", time.Since(c.began).Round(100*time.Millisecond))

	// Three OSDs: create their ids and keys, mkfs in parallel (the slow part), start.
	type osd struct{ id, uuid string }
	var osds []osd
	for range 3 {
		u := uuid()
		key := strings.TrimSpace(c.run("", "ceph-authtool", "--gen-print-key"))
		id := strings.TrimSpace(c.run(fmt.Sprintf(`{"cephx_secret": %q}`, key), "ceph", "-c", c.conf, "osd", "new", u, "-i", "-"))
		dir := filepath.Join(d, "osd", "ceph-"+id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		c.run("", "ceph-authtool", "--create-keyring", filepath.Join(dir, "keyring"), "--name", "osd."+id, "--add-key", key)
		osds = append(osds, osd{id, u})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(osds))
	for i, o := range osds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.CommandContext(ctx, "ceph-osd", "-c", c.conf, "-i", o.id, "--mkfs", "--osd-uuid", o.uuid).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("ceph-osd --mkfs -i %s: %v: %s", o.id, err, out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("OSDs made at %v", time.Since(c.began).Round(100*time.Millisecond))
	for _, o := range osds {
		c.start("osd."+o.id, "ceph-osd", "-c", c.conf, "-i", o.id, "-f")
	}
	c.retry(60*time.Second, "osd", "pool", "create", "bench", "32", "32")
	c.ceph("osd", "pool", "application", "enable", "bench", "rados")
	t.Logf("pool created at %v", time.Since(c.began).Round(100*time.Millisecond))
	return c
}

func (c *cluster) startMgr() {
	c.start("mgr.x", "ceph-mgr", "-c", c.conf, "-i", "x", "-f")
}

// primaries counts the bench pool's PGs and their objects by acting primary OSD, from the
// PG stats the OSDs report to the mgr.
func (c *cluster) primaries() (pgs, objects map[int]int) {
	c.t.Helper()
	var ls struct {
		PGStats []struct {
			Primary int `json:"acting_primary"`
			Stats   struct {
				Objects int `json:"num_objects"`
			} `json:"stat_sum"`
		} `json:"pg_stats"`
	}
	if err := json.Unmarshal([]byte(c.ceph("pg", "ls-by-pool", "bench", "-f", "json")), &ls); err != nil {
		c.t.Fatalf("ceph pg ls-by-pool bench: %v", err)
	}
	pgs, objects = map[int]int{}, map[int]int{}
	for _, p := range ls.PGStats {
		pgs[p.Primary]++
		objects[p.Primary] += p.Stats.Objects
	}
	return pgs, objects
}

// health is `ceph health` (HEALTH_OK, or HEALTH_WARN with reasons).
func (c *cluster) health() string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "ceph", "-c", c.conf, "--connect-timeout", "10", "health", "detail").Output()
	return strings.TrimSpace(string(out))
}

// load runs rados bench until the test ends: random reads (which only read the objects
// of the last write run under the default run name) beside writes (another run name, so
// the read set stays fixed). That first run writes a fixed count, not for a fixed time:
// on a busy machine a 3 s run could end with a few dozen objects, none of them in a PG
// of some OSD (CRUSH gives each OSD 6 to 18 of the 32 PGs), which then served no reads.
func (c *cluster) load() {
	const objects = 256
	c.run("", "rados", "-c", c.conf, "-p", "bench", "bench", "60", "write", "-t", "16", "-b", "16384",
		"--max-objects", strconv.Itoa(objects), "--no-cleanup")
	c.start("bench-read", "rados", "-c", c.conf, "-p", "bench", "bench", "300", "rand", "-t", "8")
	// The OSDs report PG stats to the mgr every few seconds: wait until all the objects
	// (and the run's metadata object) are counted, then check every OSD got some.
	var pgs, objs map[int]int
	wait.Until(c.t, 30*time.Second, "PG stats to count the objects written", func() bool {
		pgs, objs = c.primaries()
		n := 0
		for _, o := range objs {
			n += o
		}
		return n > objects
	})
	for id := range 3 {
		if objs[id] == 0 {
			c.t.Fatalf("osd.%d is primary for no object to read: objects by primary OSD %v, PGs %v", id, objs, pgs)
		}
	}
	c.t.Logf("objects to read by primary OSD %v (PGs %v) at %v", objs, pgs, time.Since(c.began).Round(100*time.Millisecond))
	c.start("bench-write", "rados", "-c", c.conf, "-p", "bench", "bench", "300", "write", "-t", "8", "-b", "16384", "--run-name", "w2", "--no-cleanup")
}

// TestRealCeph runs the collector as a service against a real cluster under rados bench:
// non-zero commit/apply and op latencies for every OSD and HEALTH_OK; then one OSD stopped
// is reported down with health degraded within two scrape intervals of the mgr knowing it;
// then the mgr is stopped (scrape errors counted, nothing emitted) and restarted.
func TestRealCeph(t *testing.T) {
	requireCeph(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Second)
	defer cancel()
	begin := time.Now()
	c := newCluster(t, ctx)
	var last string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last ceph health detail: %s", last)
			if b, err := exec.Command("bash", "-c", "grep -ihE 'error|exception|traceback|fail' "+c.dir+"/log/mgr.x.log | tail -20").Output(); err == nil {
				t.Logf("mgr log errors:\n%s", b)
			}
			// Whether the load was still running, and at what rate, when the test gave up.
			if b, err := exec.Command("bash", "-c", "tail -n 4 "+c.dir+"/log/bench-*.out").Output(); err == nil {
				t.Logf("rados bench output:\n%s", b)
			}
		}
	})
	wait.Until(t, 60*time.Second, "HEALTH_OK", func() bool { last = c.health(); return last == "HEALTH_OK" })
	t.Logf("cluster HEALTH_OK after %v", time.Since(begin).Round(time.Second))
	c.load()

	host, _ := os.Hostname()
	inv := &inventory.Inventory{Sites: []inventory.Site{{Name: "vault"}}, Nodes: []inventory.Node{{Name: "vault-1", Site: "vault", CephHost: host}}}
	var cfg Config
	cfg.RegisterFlags(flagSet())
	const interval = 2 * time.Second
	cfg.Interval, cfg.Timeout = interval, interval
	cfg.Cluster = "lab"
	cfg.MgrURLs = []string{c.metrics}
	// The CLI path runs as a second collector: three `ceph` CLI runs take seconds on a busy
	// machine, more than the mgr path's short interval.
	cliCfg := cfg
	cliCfg.MgrURLs = nil
	cliCfg.Command = "ceph -c " + c.conf + " --connect-timeout 5"
	cliCfg.Interval, cliCfg.Timeout = 10*time.Second, 10*time.Second

	var (
		mu      sync.Mutex
		osds    = map[string]map[uint32]pipeline.OSDStat{} // per collector, latest
		health  = map[string]pipeline.CephHealth{}
		seen    = map[uint32]*[4]bool{} // mgr: commit, apply, read, write latency seen > 0
		pools   = map[string]bool{}
		appends int
		firstAt = map[string]time.Time{} // first time a condition was seen
	)
	app := pipeline.AppenderFunc(func(_ context.Context, recs ...pipeline.Record) error {
		mu.Lock()
		defer mu.Unlock()
		appends++
		for _, r := range recs {
			switch r := r.(type) {
			case *pipeline.OSDStat:
				if osds[r.M.Collector] == nil {
					osds[r.M.Collector] = map[uint32]pipeline.OSDStat{}
				}
				osds[r.M.Collector][r.OSD] = *r
				if r.M.Collector == "ceph/lab/mgr" {
					s := seen[r.OSD]
					if s == nil {
						s = &[4]bool{}
						seen[r.OSD] = s
					}
					for i, v := range []float64{r.CommitLatencyMs, r.ApplyLatencyMs, r.ReadLatencyMs, r.WriteLatencyMs} {
						s[i] = s[i] || v > 0
					}
				}
			case *pipeline.CephHealth:
				health[r.M.Collector] = *r
			case *pipeline.CephPool:
				if r.Pool == "bench" && r.WriteOps > 0 {
					pools[r.M.Collector] = true
				}
			}
		}
		return nil
	})
	reg := prometheus.NewRegistry()
	col, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg, Appender: app, Inventory: inventory.Static(inv)})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := New(cliCfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(), Appender: app, Inventory: inventory.Static(inv)})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []services.Service{col, cli} {
		if err := services.StartAndAwaitRunning(ctx, s); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), s) })
	}

	// 1. Under load: every OSD's latencies, mapped to the inventory node, and HEALTH_OK.
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			for id, s := range seen {
				t.Logf("osd.%d latencies seen (commit, apply, read, write): %v", id, *s)
			}
			t.Logf("state at failure: seen %v health %+v pools %v appends %d", seen, health, pools, appends)
			for src, m := range osds {
				for id, o := range m {
					t.Logf("%s osd.%d %+v", src, id, o)
				}
			}
			t.Logf("ceph health: %s", c.health())
		}
	})
	wait.Until(t, 60*time.Second, "non-zero commit, apply, read and write latency for every OSD and HEALTH_OK", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != 3 || health["ceph/lab/mgr"].Status != "HEALTH_OK" || health["ceph/lab/cli"].Status != "HEALTH_OK" || !pools["ceph/lab/mgr"] {
			return false
		}
		for _, s := range seen {
			if *s != [4]bool{true, true, true, true} {
				return false
			}
		}
		for _, src := range []string{"ceph/lab/mgr", "ceph/lab/cli"} {
			for _, o := range osds[src] {
				if !o.Up || !o.In || o.M.Node != "vault-1" || o.M.Site != "vault" || o.Host != host {
					return false
				}
			}
		}
		return len(osds["ceph/lab/cli"]) == 3
	})
	mu.Lock()
	t.Logf("under load at %v: mgr osd.0 %+v; cli osd.0 %+v", time.Since(begin).Round(time.Second), osds["ceph/lab/mgr"][0], osds["ceph/lab/cli"][0])
	mu.Unlock()

	// The real `ceph osd dump`: every OSD up, in at full weight, and a flag set a moment ago.
	c.ceph("osd", "set", "noout")
	m, errs := ParseOSDDump("osd dump", []byte(c.ceph("osd", "dump", "-f", "json")))
	c.ceph("osd", "unset", "noout")
	if len(errs) != 0 || len(m.OSDs) != 3 || !slices.Contains(m.Flags, "noout") {
		t.Fatalf("osd dump: %+v %v", m, errs)
	}
	for id, o := range m.OSDs {
		if !o.Up || !o.In || o.Weight != 1 {
			t.Fatalf("osd dump: osd.%d %+v", id, o)
		}
	}

	// 2. Stop osd.2. The reference time is when the mgr itself first shows it down and
	// the health degraded; the collector must report both within two scrape intervals.
	c.stop("osd.2")
	stopped := time.Now()
	var mgrKnew time.Time
	wait.Until(t, 60*time.Second, "the mgr to show osd.2 down and health degraded", func() bool {
		b, err := scrape.Fetch(ctx, http.DefaultClient, c.metrics)
		if err != nil {
			return false
		}
		s, _ := ParseMetrics("check", b)
		if o := s.OSDs[2]; o != nil && !o.Up && s.Health != "HEALTH_OK" && s.Health != "" {
			mgrKnew = time.Now()
			return true
		}
		return false
	})
	wait.Until(t, 2*interval+time.Second, "the collector to report osd.2 down and health degraded", func() bool {
		mu.Lock()
		defer mu.Unlock()
		h := health["ceph/lab/mgr"]
		o := osds["ceph/lab/mgr"][2]
		if !o.Up && o.M.Time.After(stopped) && h.Status != "HEALTH_OK" && h.M.Time.After(stopped) {
			firstAt["down"] = time.Now()
			return h.OSDsUp == 2 && h.OSDsTotal == 3 && len(h.Checks) > 0
		}
		return false
	})
	mu.Lock()
	t.Logf("osd.2 stopped: mgr showed it after %v, the collector %v later; health %+v",
		mgrKnew.Sub(stopped).Round(100*time.Millisecond), firstAt["down"].Sub(mgrKnew).Round(100*time.Millisecond), health["ceph/lab/mgr"])
	mu.Unlock()

	// 3. Stop the mgr: its scrapes fail (counted), the CLI path still answers health from
	// the mons, and the state resumes cleanly after a restart.
	c.stop("mgr.x")
	failures := func() float64 {
		return testutil.ToFloat64(col.metrics.Errors.WithLabelValues(c.metrics, "error")) +
			testutil.ToFloat64(col.metrics.Errors.WithLabelValues(c.metrics, "http_503")) +
			testutil.ToFloat64(col.metrics.Errors.WithLabelValues(c.metrics, "timeout"))
	}
	wait.Until(t, 3*interval, "failed mgr scrapes to be counted", func() bool { return failures() >= 2 })
	mgrRecs := func() pipeline.OSDStat { mu.Lock(); defer mu.Unlock(); return osds["ceph/lab/mgr"][0] }
	before := mgrRecs()
	c.startMgr()
	wait.Until(t, 60*time.Second, "mgr records again after its restart", func() bool {
		o := mgrRecs()
		return o.M.Time.After(before.M.Time)
	})
	after := mgrRecs()
	if after.WriteOps < 0 || after.ReadOps < 0 || after.WriteLatencyMs < 0 {
		t.Fatalf("after the mgr restart: negative rates %+v", after)
	}
	t.Logf("mgr restarted; first record after: %+v; whole test %v", after, time.Since(begin).Round(time.Second))
}
