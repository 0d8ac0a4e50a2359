package topomap

import (
	"bufio"
	"context"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cilium/cilium/api/v1/observer"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

const testToken = "t0p-secret.token"

// labInventory is the reference deployment of DESIGN.md: brain in Tokyo, muscle in New
// York and Nuremberg, vault in New York, edge POPs in London and Paris.
func labInventory() *inventory.Inventory {
	return &inventory.Inventory{
		Sites: []inventory.Site{
			{Name: "tokyo", Region: "asia", Role: "brain", City: "Tokyo", Lat: 35.68, Lon: 139.69},
			{Name: "nyc", Region: "north-america", Role: "muscle", City: "New York", Lat: 40.71, Lon: -74.01},
			{Name: "nuremberg", Region: "europe", Role: "muscle", City: "Nuremberg", Lat: 49.45, Lon: 11.08},
			{Name: "london", Region: "europe", Role: "edge", City: "London", Lat: 51.51, Lon: -0.13},
			{Name: "paris", Region: "europe", Role: "edge", City: "Paris", Lat: 48.86, Lon: 2.35},
		},
		Clusters: []inventory.Cluster{
			{Name: "brain", Site: "tokyo"}, {Name: "destroyer", Site: "nyc"}, {Name: "aegis", Site: "nuremberg"},
			{Name: "vault", Site: "nyc"}, {Name: "edge-lon", Site: "london"}, {Name: "edge-par", Site: "paris"},
		},
		Nodes: []inventory.Node{
			{Name: "tyo-1", Site: "tokyo", Cluster: "brain", WireGuardKey: "a2V5LXR5bw=="},
			{Name: "nyc-1", Site: "nyc", Cluster: "destroyer", WireGuardKey: "a2V5LW55Yw=="},
			{Name: "nyc-vault-1", Site: "nyc", Cluster: "vault", CephHost: "vault-a"},
			{Name: "nue-gpu-1", Site: "nuremberg", Cluster: "aegis"},
			{Name: "lon-1", Site: "london", Cluster: "edge-lon"},
			{Name: "par-1", Site: "paris", Cluster: "edge-par"},
		},
		POPs: []inventory.POP{
			{Name: "lon", Site: "london", VIPs: []netip.Addr{netip.MustParseAddr("127.0.0.10")}, BaseWeight: 1},
			{Name: "par", Site: "paris", VIPs: []netip.Addr{netip.MustParseAddr("127.0.0.11")}, BaseWeight: 1},
		},
		Services:      []inventory.Service{{Name: "api.example.net.", POPs: []string{"lon", "par"}}},
		ClientRegions: []inventory.ClientRegion{{Name: "eu-west", Countries: []string{"GB", "FR", "IE"}}, {Name: "us-east", Continents: []string{"NA"}}},
	}
}

// testConfig is the flag defaults, as the binary would run; startMap gives the map
// testToken as the API token.
func testConfig() Config {
	var c Config
	fs := flag.NewFlagSet("t", flag.PanicOnError)
	c.RegisterFlags(fs)
	return c
}

type staticAlerts []alerts.Alert

func (s staticAlerts) Firing() []alerts.Alert { return s }

// startMap runs a map service and an HTTP server for it on 127.0.0.1:0, both stopped by
// the test.
func startMap(t testing.TB, cfg Config, inv *inventory.Inventory, src alerts.Source) (*Map, *httptest.Server) {
	t.Helper()
	m, err := New(cfg, Deps{Inventory: inv, Alerts: src, APIToken: secret.New(testToken), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		services.StopAndAwaitTerminated(context.Background(), m)
	})
	return m, srv
}

// labRecords is a live-looking lab: a full tunnel mesh of the WireGuard nodes, probes,
// steering decisions and OSDs.
func labRecords(now time.Time) []pipeline.Record {
	meta := func(site, cluster, node string) pipeline.Meta {
		return pipeline.Meta{Time: now, Collector: "test", Site: site, Cluster: cluster, Node: node}
	}
	var recs []pipeline.Record
	nodes := []struct{ name, site, cluster string }{
		{"tyo-1", "tokyo", "brain"}, {"nyc-1", "nyc", "destroyer"}, {"nue-gpu-1", "nuremberg", "aegis"},
		{"lon-1", "london", "edge-lon"}, {"par-1", "paris", "edge-par"},
	}
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			recs = append(recs, &pipeline.TunnelStat{M: meta(a.site, a.cluster, a.name), Interface: "wg0", PeerNode: b.name, PeerSite: b.site,
				LastHandshake: now.Add(-20 * time.Second), RxRate: 1.2e6, TxRate: 3.4e5, Status: pipeline.StatusOK, Endpoint: "127.0.0.1:51820"})
		}
	}
	for _, v := range []struct {
		site, pop string
		rtt       time.Duration
	}{
		{"tokyo", "lon", 230 * time.Millisecond}, {"nyc", "lon", 70 * time.Millisecond}, {"nyc", "par", 78 * time.Millisecond},
		{"nuremberg", "par", 12 * time.Millisecond}, {"nuremberg", "lon", 18 * time.Millisecond},
	} {
		recs = append(recs, &pipeline.Probe{M: meta(v.site, "", ""), Vantage: v.site + "-prober", Method: "tcp", POP: v.pop, Service: "api.example.net.", Success: true, RTT: v.rtt})
	}
	recs = append(recs,
		&pipeline.SteeringDecision{M: meta("", "", ""), Service: "api.example.net.", ClientRegion: "eu-west", POP: "lon", OldWeight: 1, NewWeight: 0.6, Cause: "rtt", Reason: "lon RTT above par"},
		&pipeline.SteeringDecision{M: meta("", "", ""), Service: "api.example.net.", ClientRegion: "eu-west", POP: "par", OldWeight: 1, NewWeight: 1, Cause: "restore"},
		&pipeline.SteeringDecision{M: meta("", "", ""), Service: "api.example.net.", ClientRegion: "us-east", POP: "lon", OldWeight: 1, NewWeight: 1, Cause: "restore", RegretMs: 12.5},
	)
	for i := range 3 {
		recs = append(recs, &pipeline.OSDStat{M: meta("nyc", "vault", "nyc-vault-1"), FSID: "f00d", OSD: uint32(i), Host: "vault-a", Up: true, In: true, CommitLatencyMs: 0.9, ApplyLatencyMs: 0.9})
	}
	recs = append(recs, &pipeline.CephHealth{M: meta("nyc", "vault", ""), FSID: "f00d", Status: "HEALTH_OK", OSDsTotal: 3, OSDsUp: 3, OSDsIn: 3})
	return recs
}

var podSuffix = regexp.MustCompile(`-[a-z0-9]{8,10}-[a-z0-9]{5}$`)

// bookinfoFlowEdges derives FlowEdges from the real Hubble capture in testdata (Cilium's
// own flow protobufs, decoded with protojson): request-direction flows between pods are
// grouped by workload (the pod name without its ReplicaSet and pod suffixes).
func bookinfoFlowEdges(t testing.TB, cluster, site string) []*pipeline.FlowEdge {
	t.Helper()
	f, err := os.Open("../testdata/topomap/hubble-otel-basic-sample-400-tcp-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type key struct {
		sns, sw, dns, dw string
		port             uint32
	}
	edges := map[key]*pipeline.FlowEdge{}
	lat := map[key][]time.Duration{}
	errs := map[key]uint64{}
	var first, last time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		var resp observer.GetFlowsResponse
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(sc.Bytes(), &resp); err != nil {
			t.Fatalf("hubble sample line %d: %v", line, err)
		}
		fl := resp.GetFlow()
		src, dst := fl.GetSource(), fl.GetDestination()
		if src.GetPodName() == "" || dst.GetPodName() == "" || src.GetNamespace() != "bookinfo" {
			continue
		}
		ts := fl.GetTime().AsTime()
		if first.IsZero() || ts.Before(first) {
			first = ts
		}
		if ts.After(last) {
			last = ts
		}
		sw, dw := podSuffix.ReplaceAllString(src.GetPodName(), ""), podSuffix.ReplaceAllString(dst.GetPodName(), "")
		tcp := fl.GetL4().GetTCP()
		if fl.GetIsReply().GetValue() {
			// An HTTP response carries the request's latency and status, caller <- callee.
			if l7 := fl.GetL7(); l7.GetType().String() == "RESPONSE" {
				k := key{dst.GetNamespace(), dw, src.GetNamespace(), sw, tcp.GetSourcePort()}
				lat[k] = append(lat[k], time.Duration(l7.GetLatencyNs()))
				if l7.GetHttp().GetCode() >= 500 {
					errs[k]++
				}
			}
			continue
		}
		k := key{src.GetNamespace(), sw, dst.GetNamespace(), dw, tcp.GetDestinationPort()}
		e := edges[k]
		if e == nil {
			e = &pipeline.FlowEdge{M: pipeline.Meta{Cluster: cluster, Site: site, Collector: "hubble/test"}, SourceNamespace: k.sns, SourceWorkload: k.sw,
				DestNamespace: k.dns, DestWorkload: k.dw, Protocol: "TCP", Port: uint16(k.port)}
			edges[k] = e
		}
		e.Flows++
		if fl.GetVerdict().String() == "DROPPED" {
			e.Drops++
		}
		if fl.GetL7().GetType().String() == "REQUEST" {
			e.Requests++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	out := make([]*pipeline.FlowEdge, 0, len(edges))
	for k, e := range edges {
		e.M.Time, e.Interval = first, max(last.Sub(first), time.Second)
		e.Errors = errs[k]
		if l := lat[k]; len(l) > 0 {
			slices.Sort(l)
			e.LatencyP50, e.LatencyP90, e.LatencyP99 = l[len(l)*50/100], l[len(l)*90/100], l[len(l)*99/100]
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].SourceWorkload+out[i].DestWorkload < out[j].SourceWorkload+out[j].DestWorkload
	})
	return out
}

// startHTTP serves h on 127.0.0.1:0 for the test and returns its base URL.
func startHTTP(t testing.TB, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
