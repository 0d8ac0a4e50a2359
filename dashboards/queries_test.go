package dashboards

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/dashboards/chhttp"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

// Every ClickHouse query of every dashboard (panels, annotations, variables), expanded as
// Grafana and the plugin expand it, runs through Meridian's ClickHouse HTTP endpoint with
// clickhouse-go in HTTP mode (the plugin's client) on the embedded engine, against the
// real schema filled through storage: with every variable on All it returns rows; with
// each variable set to one of its values it still runs.
func TestClickHouseQueries(t *testing.T) {
	store := storagetest.New(t)
	to := time.Now().UTC().Truncate(time.Minute)
	fillWorld(t, store, to)
	db := openGrafanaConn(t, store)

	all := grafanaQuery{from: to.Add(-6 * time.Hour), to: to, interval: time.Minute}
	for _, d := range loadDashboards(t) {
		t.Run(d.UID, func(t *testing.T) {
			known := map[string]bool{}
			for _, v := range d.Templating.List {
				known[v.Name] = v.Multi
			}
			var chQueries []query
			for _, q := range d.queries() {
				if q.ds.Type == clickhouseType {
					chQueries = append(chQueries, q)
				}
			}
			if len(chQueries) == 0 && d.UID != "meridian-slos" {
				t.Fatal("no ClickHouse queries")
			}
			for _, q := range chQueries {
				expanded, err := expandSQL(q.sql, all, known)
				if err != nil {
					t.Errorf("%s: %v", q.where, err)
					continue
				}
				rows, first, err := run(t, db, expanded)
				switch {
				case err != nil:
					t.Errorf("%s: %v\nSQL: %s", q.where, err, expanded)
				case rows == 0:
					t.Errorf("%s: no rows\nSQL: %s", q.where, expanded)
				case q.timeseries && !strings.HasPrefix(first, "DateTime"):
					t.Errorf("%s: a time series query's first column is %s, not a time", q.where, first)
				}
			}
			// Each variable set to one of its own values (the others on All).
			for _, v := range d.Templating.List {
				if v.Type != "query" || v.Datasource == nil || v.Datasource.Type != clickhouseType {
					continue
				}
				expanded, err := expandSQL(v.queryText(), all, known)
				if err != nil {
					t.Fatal(err)
				}
				var value string
				if err := db.QueryRowContext(context.Background(), expanded).Scan(&value); err != nil {
					t.Errorf("variable %s: %v", v.Name, err)
					continue
				}
				one := all
				one.vars = map[string][]string{v.Name: {value}}
				for _, q := range chQueries {
					expanded, err := expandSQL(q.sql, one, known)
					if err != nil {
						t.Errorf("%s with %s=%q: %v", q.where, v.Name, value, err)
						continue
					}
					if _, _, err := run(t, db, expanded); err != nil {
						t.Errorf("%s with %s=%q: %v\nSQL: %s", q.where, v.Name, value, err, expanded)
					}
				}
			}
		})
	}
}

// run returns the rows a query returns and its first column's ClickHouse type.
func run(t *testing.T, db *sql.DB, query string) (int, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return 0, "", err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return 0, "", err
	}
	n := 0
	for rows.Next() {
		n++
	}
	if len(types) == 0 { // the engine sends no header block for an empty result
		return n, "", rows.Err()
	}
	return n, types[0].DatabaseTypeName(), rows.Err()
}

// openGrafanaConn serves store through the ClickHouse HTTP endpoint on 127.0.0.1 and
// connects to it as the plugin does in HTTP mode (database/sql, gzip, path, settings).
func openGrafanaConn(t *testing.T, store *storage.Store) *sql.DB {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("grafana-test-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := chhttp.New(chhttpConfig(pw),
		chhttp.Deps{Querier: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/clickhouse/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	db := clickhouse.OpenDB(&clickhouse.Options{
		Protocol:    clickhouse.HTTP,
		Addr:        []string{strings.TrimPrefix(srv.URL, "http://")},
		HttpUrlPath: "/clickhouse/",
		Auth:        clickhouse.Auth{Username: "grafana", Password: "grafana-test-password", Database: store.Database()},
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionGZIP},
		Settings:    clickhouse.Settings{"limit": 0},
		DialTimeout: 10 * time.Second,
	})
	t.Cleanup(func() { db.Close() })
	return db
}

// fillWorld stores 30 minutes (ending a minute before to) of every record kind of a
// small reference world, through the storage encoder and store as the pipeline does.
func fillWorld(t *testing.T, store *storage.Store, to time.Time) {
	t.Helper()
	byKind := map[pipeline.Kind][]pipeline.Record{}
	add := func(r pipeline.Record) { byKind[r.Kind()] = append(byKind[r.Kind()], r) }
	type tunnel struct{ site, node, peerSite, peerNode string }
	tunnels := []tunnel{{"nyc", "nyc-1", "nbg", "nbg-1"}, {"nbg", "nbg-1", "nyc", "nyc-1"}, {"nyc", "nyc-1", "tyo", "tyo-1"}, {"tyo", "tyo-1", "lon", "lon-1"}}
	vantages := map[string]map[string]time.Duration{ // vantage -> POP -> RTT
		"nyc": {"lon": 70 * time.Millisecond, "par": 80 * time.Millisecond},
		"tyo": {"lon": 230 * time.Millisecond, "par": 240 * time.Millisecond},
		"nbg": {"lon": 15 * time.Millisecond, "par": 12 * time.Millisecond},
	}
	const service = "api.example.net."
	for i := 30; i >= 1; i-- {
		now := to.Add(-time.Duration(i) * time.Minute)
		for k, tn := range tunnels {
			status := pipeline.StatusOK
			if tn.peerSite == "lon" && i <= 10 {
				status = pipeline.StatusDegraded
				if i <= 3 {
					status = pipeline.StatusDown
				}
			}
			add(&pipeline.TunnelStat{
				M:         pipeline.Meta{Time: now, Collector: "wireguard/" + tn.node, Site: tn.site, Cluster: tn.site + "-k8s", Node: tn.node},
				Interface: "wg0", PublicKey: fmt.Sprintf("key-%d", k), PeerNode: tn.peerNode, PeerSite: tn.peerSite,
				Endpoint:      tn.peerNode + ":51820",
				AllowedIPs:    []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", k))},
				LastHandshake: now.Add(-time.Duration(40+10*i) * time.Second),
				RxBytes:       uint64(1e6 * (31 - i)), TxBytes: uint64(5e5 * (31 - i)), RxRate: 16e3, TxRate: 8e3,
				Keepalive: 25 * time.Second, Status: status,
			})
		}
		up, in := uint32(4), uint32(4)
		health, checks := "HEALTH_OK", []string(nil)
		for osd := uint32(0); osd < 4; osd++ {
			isUp := !(osd == 3 && i <= 5)
			if !isUp {
				up, in, health, checks = 3, 3, "HEALTH_WARN", []string{"OSD_DOWN"}
			}
			host := fmt.Sprintf("vault-%d", osd%2+1)
			add(&pipeline.OSDStat{
				M:    pipeline.Meta{Time: now, Collector: "ceph/nyc-vault", Site: "nyc", Cluster: "nyc-vault", Node: host},
				FSID: "f5c6", OSD: osd, Host: host, DeviceClass: "ssd", Up: isUp, In: isUp,
				CommitLatencyMs: 0.8 + float64(osd)/10, ApplyLatencyMs: 0.9 + float64(i%5)/10,
				ReadLatencyMs: 0.5, WriteLatencyMs: 1.2 + float64(osd), ReadOps: 100, WriteOps: 200, ReadBytes: 4e6, WriteBytes: 8e6,
			})
		}
		add(&pipeline.CephHealth{M: pipeline.Meta{Time: now, Collector: "ceph/nyc-vault", Site: "nyc", Cluster: "nyc-vault"},
			FSID: "f5c6", Status: health, Checks: checks, OSDsTotal: 4, OSDsUp: up, OSDsIn: in})
		for id, pool := range []string{"rbd", "cephfs_data"} {
			add(&pipeline.CephPool{M: pipeline.Meta{Time: now, Collector: "ceph/nyc-vault", Site: "nyc", Cluster: "nyc-vault"},
				FSID: "f5c6", Pool: pool, PoolID: uint32(id + 1), ReadOps: 50, WriteOps: 80, ReadBytes: 2e6, WriteBytes: 3e6, StoredBytes: 1 << 30})
		}

		flowMeta := pipeline.Meta{Time: now, Collector: "hubble/nyc-k8s", Site: "nyc", Cluster: "nyc-k8s", Node: "nyc-1"}
		web := pipeline.Endpoint{Namespace: "shop", Pod: "web-1", Workload: "web", WorkloadKind: "Deployment", Identity: 100, IP: netip.MustParseAddr("10.0.1.10")}
		api := pipeline.Endpoint{Namespace: "shop", Pod: "api-1", Workload: "api", WorkloadKind: "Deployment", Identity: 200, IP: netip.MustParseAddr("10.0.1.20")}
		dbEP := pipeline.Endpoint{Namespace: "shop", Pod: "db-0", Workload: "db", WorkloadKind: "StatefulSet", Identity: 300, IP: netip.MustParseAddr("10.0.1.30")}
		add(&pipeline.Flow{M: flowMeta, Source: web, Destination: api, L4Protocol: "TCP", SourcePort: 40000, DestinationPort: 8080,
			Verdict: "FORWARDED", Direction: "EGRESS", L7Type: "HTTP", HTTPMethod: "GET", HTTPCode: 200, HTTPPath: "/cart", L7Latency: 12 * time.Millisecond})
		add(&pipeline.Flow{M: flowMeta, Source: web, Destination: api, L4Protocol: "TCP", SourcePort: 40001, DestinationPort: 8080,
			Verdict: "FORWARDED", Direction: "EGRESS", L7Type: "HTTP", HTTPMethod: "POST", HTTPCode: 503, HTTPPath: "/pay", L7Latency: 250 * time.Millisecond})
		add(&pipeline.Flow{M: flowMeta, Source: web, Destination: dbEP, L4Protocol: "TCP", SourcePort: 40002, DestinationPort: 5432,
			Verdict: "DROPPED", DropReason: "POLICY_DENIED", Direction: "EGRESS"})
		add(&pipeline.FlowEdge{M: flowMeta, Interval: time.Minute, SourceNamespace: "shop", SourceWorkload: "web", DestNamespace: "shop", DestWorkload: "api",
			Protocol: "TCP", Port: 8080, Flows: 120, Drops: 2, DropReasons: map[string]uint64{"POLICY_DENIED": 2}, Requests: 100, Errors: 1,
			LatencyP50: 10 * time.Millisecond, LatencyP90: 40 * time.Millisecond, LatencyP99: 180 * time.Millisecond})
		add(&pipeline.FlowEdge{M: flowMeta, Interval: time.Minute, SourceNamespace: "shop", SourceWorkload: "api", DestNamespace: "shop", DestWorkload: "db",
			Protocol: "TCP", Port: 5432, Flows: 60, Drops: 1, DropReasons: map[string]uint64{"CT_MAP_INSERTION_FAILED": 1}})

		// The front door: lon's pair with lon-fd-1 the MASTER until it fails over to
		// lon-fd-2 at minute 10; par carries 80% of its capacity.
		for _, fd := range []struct {
			pop, node string
			util      float64
		}{{"lon", "lon-fd-1", 0.4}, {"par", "par-fd-1", 0.8}} {
			m := pipeline.Meta{Time: now, Collector: "haproxy/" + fd.node, Site: fd.pop, Node: fd.node}
			add(&pipeline.HAProxyStat{M: m, POP: fd.pop, Proxy: "api", Type: "frontend", Status: "OPEN", Sessions: 40, SessionMax: 9984,
				SessionRate: 400 * fd.util, BytesIn: 4e4, BytesOut: 4e6 * fd.util, HTTP4xx: 2, HTTP5xx: 0.5, Utilisation: fd.util})
			add(&pipeline.HAProxyStat{M: m, POP: fd.pop, Proxy: "pop", Type: "backend", Status: "UP", Sessions: 40, SessionRate: 400 * fd.util,
				BytesIn: 4e4, BytesOut: 4e6 * fd.util, Queue: 1, HTTP5xx: 0.5, ResponseMs: 12})
			add(&pipeline.HAProxyStat{M: m, POP: fd.pop, Proxy: "pop", Server: "s1", Type: "server", Status: "UP", CheckStatus: "L7OK", Sessions: 40,
				SessionRate: 400 * fd.util, ResponseMs: 12})
		}
		for _, node := range []string{"lon-fd-1", "lon-fd-2"} {
			state := pipeline.VRRPBackup
			if (node == "lon-fd-1") == (i > 10) {
				state = pipeline.VRRPMaster
			}
			add(&pipeline.VRRPState{M: pipeline.Meta{Time: now, Collector: "keepalived/" + node, Site: "lon", Node: node}, POP: "lon", Instance: "VI_lon",
				State: state, Priority: 100, VIPs: []string{"192.0.2.10"}, HoldsVIP: state == pipeline.VRRPMaster, Since: to.Add(-time.Hour)})
		}
		if i == 10 {
			add(&pipeline.VRRPTransition{M: pipeline.Meta{Time: now, Collector: "keepalived/lon-fd-2", Site: "lon", Node: "lon-fd-2"}, POP: "lon", Instance: "VI_lon",
				From: pipeline.VRRPBackup, To: pipeline.VRRPMaster, Priority: 100, Failover: true, PreviousMaster: "lon-fd-1", Duration: 1200 * time.Millisecond})
		}

		for v, pops := range vantages {
			for pop, rtt := range pops {
				for _, method := range []string{"tcp", "http"} {
					ok := !(pop == "par" && v == "tyo" && i <= 4)
					add(&pipeline.Probe{M: pipeline.Meta{Time: now, Collector: "geodns/" + v, Site: v}, Vantage: v, Method: method, POP: pop,
						Service: service, Target: pop + ".example.net:443", Success: ok, RTT: rtt + time.Duration(i)*time.Millisecond})
				}
			}
			add(&pipeline.Probe{M: pipeline.Meta{Time: now, Collector: "geodns/" + v, Site: v}, Vantage: v, Method: "dns", POP: "lon",
				Service: service, ClientRegion: "europe", Target: service, Answer: "192.0.2.10", Rcode: "NOERROR", Success: true, RTT: 2 * time.Millisecond})
		}
		if i%5 == 0 {
			old, w := 1.0, 0.5
			cause, reason := "rtt", "among the nearest healthy POPs"
			if i == 5 {
				old, w, cause, reason = 0.5, 0, "health", "2 of 3 vantages see 3+ consecutive probe failures"
			}
			add(&pipeline.SteeringDecision{M: pipeline.Meta{Time: now, Collector: "steering"}, Service: service, ClientRegion: "asia", POP: "par",
				OldWeight: old, NewWeight: w, Cause: cause, Reason: reason, RegretMs: 12.5})
			add(&pipeline.SteeringInputs{M: pipeline.Meta{Time: now, Collector: "steering"}, Started: to.Add(-6 * time.Hour), Keyframe: true,
				Cells: []pipeline.SteeringCell{{Vantage: "tokyo", POP: "par", RTT: 2 * time.Millisecond, LastSeen: now, LastOK: now}}})
			if i == 5 {
				add(&pipeline.AlertState{M: pipeline.Meta{Time: now, Collector: "ruler"}, Name: "MeridianPOPAvailability", Severity: "page",
					Labels: map[string]string{"pop": "par", "slo": "availability"}, State: pipeline.AlertFiring, ActiveAt: now.Add(-time.Minute)})
			}
		}
	}
	enc := storage.NewEncoder()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, kind := range pipeline.Kinds {
		recs := byKind[kind]
		if len(recs) == 0 {
			t.Fatalf("no test records of kind %s", kind)
		}
		native, err := enc.Encode(kind, recs)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Insert(ctx, pipeline.Block{Kind: kind, Rows: len(recs), Token: "world-" + kind.String(), Native: native}); err != nil {
			t.Fatal(err)
		}
	}
}

// chhttpConfig is the endpoint's default configuration with the password file pw.
func chhttpConfig(pw string) chhttp.Config {
	var c chhttp.Config
	c.RegisterFlags(flag.NewFlagSet("test", flag.PanicOnError))
	c.PasswordFile = pw
	return c
}
