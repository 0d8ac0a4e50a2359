package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/alerts/slos"
	"github.com/meridianhq/meridian/collectors/geodns"
	"github.com/meridianhq/meridian/collectors/haproxy"
	"github.com/meridianhq/meridian/collectors/hubble"
	"github.com/meridianhq/meridian/collectors/keepalived"
	"github.com/meridianhq/meridian/dashboards/chhttp"
	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/lab"
	"github.com/meridianhq/meridian/server"
)

const labUsage = `Usage:
  meridian lab run [flags]             start the lab world and Meridian (all modules) pointed at it
  meridian lab soak -duration D [flags] run the lab on the soak schedule, check its invariants, report
  meridian lab fail KIND TARGET [MODE] inject a failure: pop nuremberg | tunnel newyork-nuremberg | osd 3 slow | osd 3 down
                                       | vrrp paris (stop the keepalived holding Paris's VIP)
  meridian lab heal                    clear every failure
  meridian lab load [-duration D] [-service www] REGION RATE
                                       RATE new sessions/s from REGION's clients through the POPs
                                       the GeoDNS steers it to (0 stops; default 5m)
  meridian lab status                  list the failures in force
`

// labCommand runs `meridian lab ...`.
func labCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, labUsage)
		return 0
	}
	var err error
	switch args[0] {
	case "run":
		err = labRun(args[1:], stderr)
	case "soak":
		err = labSoak(args[1:], stdout, stderr)
	case "fail", "heal", "status", "load":
		err = labControl(args[0], args[1:], stdout)
	default:
		err = fmt.Errorf("unknown lab command %q\n%s", args[0], labUsage)
	}
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "meridian lab:", err)
		return 2
	}
	return 0
}

// labDir holds the running lab's token, ClickHouse HTTP password, SLO specs and
// generated configuration: $MERIDIAN_LAB_DIR, else ~/.cache/meridian/lab. It does not
// depend on the working directory, so `meridian lab fail` finds the token of the lab that
// `make run` started wherever it is run.
func labDir() string {
	if d := os.Getenv("MERIDIAN_LAB_DIR"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "meridian", "lab")
	}
	return filepath.Join("data", "lab")
}

func labRun(args []string, stderr io.Writer) error {
	var lc lab.Config
	cfg, err := parseConfig(args, stderr, lc.RegisterFlags)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, token, logger, err := startLab(ctx, cfg, lc, stderr)
	if err != nil {
		return err
	}
	printBanner(stderr, cfg, filepath.Join(labDir(), "meridian.yaml"), token)
	err = serve(ctx, cfg, logger, nil) // the lab's configuration is generated, not a file to reload
	stop()
	<-l.Done() // the lab removes its namespaces before the process exits
	return err
}

// startLab starts the lab world and points cfg at it; the generated configuration is
// written to labDir()/meridian.yaml.
func startLab(ctx context.Context, cfg *Config, lc lab.Config, stderr io.Writer) (*lab.Lab, string, *slog.Logger, error) {
	dir := labDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", nil, err
	}
	token, err := labSecret(dir, "token", &cfg.Server.TokenFile, server.TokenEnv)
	if err != nil {
		return nil, "", nil, err
	}
	// Grafana's ClickHouse datasource needs /clickhouse/, which is off without a password.
	if _, err := labSecret(dir, "clickhouse-password", &cfg.ClickHouseHTTP.PasswordFile, chhttp.PasswordEnv); err != nil {
		return nil, "", nil, err
	}
	if len(cfg.Ruler.SpecFiles) == 0 {
		if cfg.Ruler.SpecFiles, err = writeSLOs(filepath.Join(dir, "slos")); err != nil {
			return nil, "", nil, err
		}
	}
	logger := newLogger(cfg, stderr, new(slog.LevelVar))
	l, err := lab.Start(ctx, lc, token, logger.With("component", "lab"))
	if err != nil {
		return nil, "", nil, err
	}
	labOverlay(cfg, l.Endpoints())
	l.UseDNS(cfg.Steering.DNS.Listen)
	if err := cfg.Validate(); err != nil {
		return nil, "", nil, fmt.Errorf("generated configuration: %w", err)
	}
	if err := writeYAML(filepath.Join(dir, "meridian.yaml"), cfg); err != nil {
		return nil, "", nil, err
	}
	return l, token, logger, nil
}

// labSoak runs `meridian lab soak`: the lab and Meridian in this process, the soak's
// schedule against them (lab.Soak), the report on stdout. Broken invariants fail it.
func labSoak(args []string, stdout, stderr io.Writer) error {
	var lc lab.Config
	duration, profile := time.Hour, ""
	cfg, err := parseConfig(args, stderr, func(f *flag.FlagSet) {
		lc.RegisterFlags(f)
		f.DurationVar(&duration, "duration", duration, "Length of the soak's schedule (calm, POP failure, heal, tunnel failure, heal, OSD slow, heal, calm).")
		f.StringVar(&profile, "heap-profile", "", "Write a Go heap profile (pprof) here when the soak ends, and one to FILE.warm when its warm-up ends: go tool pprof -base FILE.warm FILE shows what grew.")
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, token, logger, err := startLab(ctx, cfg, lc, stderr)
	if err != nil {
		return err
	}
	report, err := runSoak(ctx, cfg, l, token, duration, profile, logger)
	stop()
	<-l.Done()
	if err != nil {
		return err
	}
	report.Write(stdout)
	if failed := report.Failed(); len(failed) > 0 {
		return fmt.Errorf("soak: %d invariants broken:\n  %s", len(failed), strings.Join(failed, "\n  "))
	}
	return nil
}

// runSoak serves Meridian with cfg until the soak of lab l is over.
// Heap profiles are written to profile+".warm" as the warm-up ends and to profile before
// Meridian stops (unless profile is empty).
func runSoak(ctx context.Context, cfg *Config, l *lab.Lab, token string, d time.Duration, profile string, logger *slog.Logger) (*lab.SoakReport, error) {
	ctx, cancel := context.WithCancel(ctx)
	a := newApp(cfg, logger)
	done := make(chan error, 1)
	go func() { done <- serveApp(ctx, a) }()
	base := "http://" + cfg.Server.ListenAddress
	if err := waitReady(ctx, base, 2*time.Minute, done); err != nil {
		cancel()
		return nil, err
	}
	report, err := l.Soak(ctx, lab.SoakConfig{Duration: d, Meridian: base, Token: token, Log: logger.With("component", "soak"),
		Resources: func(ctx context.Context) (lab.Resources, error) { return processResources(ctx, a) },
		Query: func(ctx context.Context, sql string) ([]byte, error) {
			if a.store == nil {
				return nil, errors.New("no store")
			}
			return a.store.Query(ctx, sql, "TSV")
		},
		Database: cfg.Storage.Database, ProbeRTTDegraded: cfg.Topomap.ProbeRTTDegraded, WarmedUp: func() {
			if profile != "" {
				if err := writeHeapProfile(profile + ".warm"); err != nil {
					logger.Error("soak: heap profile", "file", profile+".warm", "err", err)
				}
			}
		}})
	if profile != "" {
		if perr := writeHeapProfile(profile); perr != nil {
			logger.Error("soak: heap profile", "file", profile, "err", perr)
		}
	}
	cancel()
	if serr := <-done; serr != nil && err == nil {
		err = serr
	}
	return report, err
}

func writeHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	runtime.GC() // the profile's in-use figures are as of the last GC
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// waitReady waits for base's /readyz, or for serve to end first.
func waitReady(ctx context.Context, base string, limit time.Duration, done <-chan error) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	c := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		if resp, err := c.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-done:
			return fmt.Errorf("meridian stopped before it was ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return fmt.Errorf("meridian at %s not ready within %s", base, limit)
}

// processResources samples this process: RSS from /proc, the live Go heap (what the last
// GC kept, so the GC's sawtooth does not hide growth), the memory the embedded engine
// tracks and each table's active parts.
func processResources(ctx context.Context, a *app) (lab.Resources, error) {
	var r lab.Resources
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return r, err
	}
	var size, resident float64
	if _, err := fmt.Sscan(string(statm), &size, &resident); err != nil {
		return r, fmt.Errorf("/proc/self/statm: %w", err)
	}
	r.RSS = resident * float64(os.Getpagesize())
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	r.Heap = float64(sample[0].Value.Uint64())
	if a.store == nil {
		return r, nil
	}
	out, err := a.store.Query(ctx, "SELECT table, count() FROM system.parts WHERE active AND database = '"+a.cfg.Storage.Database+"' GROUP BY table", "TSV")
	if err != nil {
		return r, err
	}
	r.Parts = map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var table string
		var n int
		if _, err := fmt.Sscan(line, &table, &n); err == nil {
			r.Parts[table] = n
		}
	}
	out, err = a.store.Query(ctx, "SELECT metric, value FROM system.metrics WHERE metric = 'MemoryTracking' OR metric LIKE '%CacheBytes'", "TSV")
	if err != nil {
		return r, err
	}
	r.Caches = map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var metric string
		var v float64
		if _, err := fmt.Sscan(line, &metric, &v); err != nil {
			return r, fmt.Errorf("engine memory: %q: %w", line, err)
		}
		if metric == "MemoryTracking" {
			r.Engine = v
		} else {
			r.Caches[strings.TrimSuffix(metric, "Bytes")] = v
		}
	}
	return r, nil
}

// labOverlay points cfg at the lab's peers, as an operator's file would point it at real ones.
func labOverlay(cfg *Config, e lab.Endpoints) {
	cfg.Inventory = *e.Inventory
	cfg.WireGuard.ExporterURLs = nil
	for _, n := range e.Inventory.Nodes {
		if u, ok := e.WireGuard[n.Name]; ok {
			cfg.WireGuard.ExporterURLs = append(cfg.WireGuard.ExporterURLs, u)
		}
	}
	if len(e.WireGuardDevices) > 0 {
		cfg.WireGuard.Devices = true // real wireguard-go devices: their keys are the inventory's
	}
	cfg.Ceph.Cluster = "ny-vault"
	cfg.Ceph.MgrURLs = []string{e.CephMgr}
	cfg.Hubble.Relays = nil
	for _, c := range e.Inventory.Clusters {
		if addr, ok := e.Relays[c.Name]; ok {
			cfg.Hubble.Relays = append(cfg.Hubble.Relays, hubble.RelayConfig{Cluster: c.Name, Address: addr})
		}
	}
	cfg.Steering.DNS.Zone.Origin = lab.Zone
	if cfg.Steering.DNS.Listen == "" {
		cfg.Steering.DNS.Listen = "127.0.0.1:5353"
	}
	cfg.Probes.DNSServer = cfg.Steering.DNS.Listen
	cfg.HAProxy.Targets = nil
	for _, fd := range e.FrontDoors {
		cfg.HAProxy.Targets = append(cfg.HAProxy.Targets, haproxy.Target{POP: fd.POP, Node: fd.Node, URL: fd.Metrics, Frontends: []string{fd.Frontend}})
	}
	cfg.Keepalived.Nodes = nil
	for _, n := range e.VRRP {
		cfg.Keepalived.Nodes = append(cfg.Keepalived.Nodes, keepalived.Node{POP: n.POP, Node: n.Node, FIFO: n.FIFO})
	}
	cfg.Probes.ICMP = false // loopback echoes carry no distance (lab/pop.go)
	cfg.Probes.Vantages = nil
	for _, s := range e.Inventory.Sites {
		cfg.Probes.Vantages = append(cfg.Probes.Vantages, geodns.Vantage{Site: s.Name, SourceAddress: e.Vantages[s.Name]})
	}
}

// writeSLOs writes the shipped SLO specs into dir and returns their paths.
func writeSLOs(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	names, err := fs.Glob(slos.FS, "*.yaml")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		b, err := slos.FS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		f := filepath.Join(dir, n)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// printBanner tells a new user where to look and how to break things.
func printBanner(w io.Writer, cfg *Config, file, token string) {
	base := "http://" + cfg.Server.ListenAddress
	dnsHost, dnsPort, _ := strings.Cut(cfg.Steering.DNS.Listen, ":")
	fmt.Fprintf(w, `
Meridian lab: the reference world on loopback (Tokyo brain, New York compute + vault,
Nuremberg compute, London and Paris edge POPs).

  Live map         %[1]s/map/?token=%[2]s
  Metrics          %[1]s/metrics
  Prometheus API   %[1]s/prometheus   (Grafana Prometheus datasource, header "Authorization: Bearer %[2]s")
  ClickHouse HTTP  %[1]s/clickhouse/  (Grafana ClickHouse datasource: user %[7]s, password in %[8]s)
                   curl -u %[7]s:"$(cat %[8]s)" '%[1]s/clickhouse/?query=SELECT+count()+FROM+meridian.probes'

  GeoDNS           kdig @%[3]s -p %[4]s +subnet=198.51.100.0/26 api.%[5]s   (a client in France)
  Grafana          dashboards/README.md: provisioning in dashboards/provisioning
  Configuration    %[6]s (the same file works against real relays, mgrs and POPs)

Break things (in another terminal), and watch the map, the DNS answers and the alerts:
  ./bin/meridian lab fail pop nuremberg
  ./bin/meridian lab fail tunnel newyork-nuremberg
  ./bin/meridian lab fail osd 3 slow
  ./bin/meridian lab fail vrrp paris     (Paris's VRRP master stops: the backup takes the VIP)
  ./bin/meridian lab load france 90      (90 new sessions/s against POPs of 100/s: Paris sheds)
  ./bin/meridian lab heal
  ./bin/meridian lab status

Ctrl-C stops everything. As root with Debian's keepalived, each POP's front door has a
Keepalived pair running VRRP between two network namespaces (else stand-ins writing the
same notify lines). As root, -lab.wireguard-netns runs the WireGuard mesh for real
(wireguard-go in one network namespace per site, read through wgctrl).

`, base, token, dnsHost, dnsPort, lab.Zone, file, cfg.ClickHouseHTTP.User, cfg.ClickHouseHTTP.PasswordFile)
}

// labSecret returns the lab's secret of that name: the one configured (*file, else
// $env), else one made for this lab and kept in dir/name, which *file then names.
// Keeping it lets `meridian lab fail` find the token, and a restarted lab keep it.
func labSecret(dir, name string, file *string, env string) (string, error) {
	if v, err := secret.Read(secret.Source{File: *file, Env: env}); err != nil || !v.Empty() {
		return v.Reveal(), err
	}
	f := filepath.Join(dir, name)
	if v, err := secret.Read(secret.Source{File: f}); err == nil {
		*file = f
		return v.Reveal(), nil
	}
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	t := hex.EncodeToString(buf)
	if err := os.WriteFile(f, []byte(t+"\n"), 0o600); err != nil {
		return "", err
	}
	*file = f
	return t, nil
}

func writeYAML(file string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o600)
}

// labControl sends a failure, a heal or a status request to a running lab.
func labControl(cmd string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("meridian lab "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("lab.address", "http://127.0.0.1:9479", "Base URL of the running lab's control API.")
	duration := fs.Duration("duration", 5*time.Minute, "lab load: how long the load lasts.")
	service := fs.String("service", "www", "lab load: the service the clients ask for (www or api).")
	tokenFile := fs.String("server.token-file", "", "File holding the API token (default: $"+server.TokenEnv+", else the running lab's token in "+labDir()+").")
	if err := fs.Parse(args); err != nil {
		return err
	}
	token, err := secret.Read(secret.Source{File: *tokenFile, Env: server.TokenEnv, Field: "-server.token-file"})
	if err == nil && token.Empty() {
		token, err = secret.Read(secret.Source{File: filepath.Join(labDir(), "token"), Field: "lab token"})
	}
	if err != nil {
		return fmt.Errorf("%w (is the lab running? `meridian lab run` writes it)", err)
	}
	method, path, body := "POST", "/lab/"+cmd, ""
	switch cmd {
	case "fail":
		f, err := lab.ParseFailure(fs.Args())
		if err != nil {
			return err
		}
		b, _ := json.Marshal(f)
		body = string(b)
	case "status":
		method = "GET"
		path = "/lab/state"
	case "load":
		if fs.NArg() != 2 {
			return fmt.Errorf("usage: meridian lab load [-duration D] [-service www] REGION RATE")
		}
		rate, err := strconv.Atoi(fs.Arg(1))
		if err != nil {
			return fmt.Errorf("lab load: rate %q: %w", fs.Arg(1), err)
		}
		b, _ := json.Marshal(lab.LoadRequest{Region: fs.Arg(0), Service: *service, Rate: rate, Duration: *duration})
		body = string(b)
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(*addr, "/")+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token.Reveal())
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("is the lab running (make run)? %w", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", strings.TrimSpace(string(out)))
	}
	_, err = stdout.Write(out)
	return err
}
