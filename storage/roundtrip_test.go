package storage_test

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/storagetest"
)

// t0 is inside every TTL on any date; the wanted rows name its day as DAY.
var t0 = testtime.Day.Add(time.Hour + 2*time.Minute + 3*time.Second + 123456789)

func meta(node string) pipeline.Meta {
	return pipeline.Meta{Time: t0, Collector: "test/" + node, Site: "nyc", Cluster: "destroyer", Node: node}
}

type roundTrip struct {
	kind pipeline.Kind
	recs []pipeline.Record
	want []string
}

// roundTrips are, per kind, records and the rows SELECT * returns for them (JSONEachRow):
// the literal values the engine stored, checked against what the records hold.
var roundTrips = []roundTrip{
	{pipeline.KindTunnelStat, []pipeline.Record{
		&pipeline.TunnelStat{M: meta("nyc-1"), Interface: "wg0", PublicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
			PeerNode: "tyo-1", PeerSite: "tokyo", Endpoint: "127.0.0.1:51820",
			AllowedIPs:    []netip.Prefix{netip.MustParsePrefix("10.10.0.2/32"), netip.MustParsePrefix("fd00::/64")},
			LastHandshake: t0.Add(-90 * time.Second), RxBytes: 1 << 40, TxBytes: 12345, RxRate: 1.5e6, TxRate: 0.25,
			Keepalive: 25 * time.Second, Status: pipeline.StatusOK},
		&pipeline.TunnelStat{M: meta("nyc-1"), Interface: "wg0", PublicKey: "b", Status: pipeline.StatusDown},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/nyc-1","site":"nyc","cluster":"destroyer","node":"nyc-1","interface":"wg0","public_key":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=","peer_node":"tyo-1","peer_site":"tokyo","endpoint":"127.0.0.1:51820","allowed_ips":["10.10.0.2/32","fd00::/64"],"last_handshake":"DAY 01:00:33.123","rx_bytes":1099511627776,"tx_bytes":12345,"rx_rate":1500000,"tx_rate":0.25,"keepalive":25000000000,"status":"ok"}`,
		`{"time":"DAY 01:02:03.123","collector":"test/nyc-1","site":"nyc","cluster":"destroyer","node":"nyc-1","interface":"wg0","public_key":"b","peer_node":"","peer_site":"","endpoint":"","allowed_ips":[],"last_handshake":"1970-01-01 00:00:00.000","rx_bytes":0,"tx_bytes":0,"rx_rate":0,"tx_rate":0,"keepalive":0,"status":"down"}`,
	}},
	{pipeline.KindOSDStat, []pipeline.Record{
		&pipeline.OSDStat{M: meta("vault-1"), FSID: "f0e1", OSD: 3, Host: "vault-1", DeviceClass: "ssd", Up: true, In: false,
			CommitLatencyMs: 1.25, ApplyLatencyMs: 0.5, ReadLatencyMs: 0.125, WriteLatencyMs: 2, ReadOps: 100, WriteOps: 50.5, ReadBytes: 4096, WriteBytes: 8192, Weight: 0.85},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/vault-1","site":"nyc","cluster":"destroyer","node":"vault-1","fsid":"f0e1","osd":3,"host":"vault-1","device_class":"ssd","up":true,"in":false,"commit_latency_ms":1.25,"apply_latency_ms":0.5,"read_latency_ms":0.125,"write_latency_ms":2,"read_ops":100,"write_ops":50.5,"read_bytes":4096,"write_bytes":8192,"weight":0.85}`,
	}},
	{pipeline.KindCephHealth, []pipeline.Record{
		&pipeline.CephHealth{M: meta("vault-1"), FSID: "f0e1", Status: "HEALTH_WARN", Checks: []string{"OSD_DOWN", "PG_DEGRADED"}, OSDsTotal: 3, OSDsUp: 2, OSDsIn: 3, Flags: []string{"noout", "norebalance"}},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/vault-1","site":"nyc","cluster":"destroyer","node":"vault-1","fsid":"f0e1","status":"HEALTH_WARN","checks":["OSD_DOWN","PG_DEGRADED"],"osds_total":3,"osds_up":2,"osds_in":3,"flags":["noout","norebalance"]}`,
	}},
	{pipeline.KindCephPool, []pipeline.Record{
		&pipeline.CephPool{M: meta("vault-1"), FSID: "f0e1", Pool: "rbd", PoolID: 2, ReadOps: 1, WriteOps: 2, ReadBytes: 3, WriteBytes: 4, StoredBytes: 1 << 50},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/vault-1","site":"nyc","cluster":"destroyer","node":"vault-1","fsid":"f0e1","pool":"rbd","pool_id":2,"read_ops":1,"write_ops":2,"read_bytes":3,"write_bytes":4,"stored_bytes":1125899906842624}`,
	}},
	{pipeline.KindFlow, []pipeline.Record{
		&pipeline.Flow{M: meta("nyc-1"),
			Source:      pipeline.Endpoint{Namespace: "shop", Pod: "web-7d9f-abcde", Workload: "web", WorkloadKind: "Deployment", Identity: 12345, IP: netip.MustParseAddr("10.0.1.5"), Labels: []string{"app=web", "tier=front"}},
			Destination: pipeline.Endpoint{Namespace: "shop", Pod: "api-0", Workload: "api", WorkloadKind: "StatefulSet", Identity: 23456, IP: netip.MustParseAddr("fd00::17")},
			L4Protocol:  "TCP", SourcePort: 43210, DestinationPort: 8080, Verdict: "FORWARDED", Direction: "EGRESS", IsReply: true,
			L7Type: "HTTP", HTTPMethod: "GET", HTTPCode: 503, HTTPPath: "/api/v1/cart?id=1", L7Latency: 1234567 * time.Nanosecond},
		&pipeline.Flow{M: meta("nyc-1"), Verdict: "DROPPED", DropReason: "POLICY_DENIED", L7Type: "DNS", DNSQuery: "api.example.", DNSRcode: 3},
	}, []string{
		`{"time":"DAY 01:02:03.123456789","collector":"test/nyc-1","site":"nyc","cluster":"destroyer","node":"nyc-1","src_namespace":"shop","src_pod":"web-7d9f-abcde","src_workload":"web","src_workload_kind":"Deployment","src_identity":12345,"src_ip":"::ffff:10.0.1.5","src_labels":["app=web","tier=front"],"dst_namespace":"shop","dst_pod":"api-0","dst_workload":"api","dst_workload_kind":"StatefulSet","dst_identity":23456,"dst_ip":"fd00::17","dst_labels":[],"l4_protocol":"TCP","src_port":43210,"dst_port":8080,"verdict":"FORWARDED","drop_reason":"","direction":"EGRESS","is_reply":true,"l7_type":"HTTP","http_method":"GET","http_code":503,"http_path":"/api/v1/cart?id=1","l7_latency":1234567,"dns_query":"","dns_rcode":0}`,
		`{"time":"DAY 01:02:03.123456789","collector":"test/nyc-1","site":"nyc","cluster":"destroyer","node":"nyc-1","src_namespace":"","src_pod":"","src_workload":"","src_workload_kind":"","src_identity":0,"src_ip":"::","src_labels":[],"dst_namespace":"","dst_pod":"","dst_workload":"","dst_workload_kind":"","dst_identity":0,"dst_ip":"::","dst_labels":[],"l4_protocol":"","src_port":0,"dst_port":0,"verdict":"DROPPED","drop_reason":"POLICY_DENIED","direction":"","is_reply":false,"l7_type":"DNS","http_method":"","http_code":0,"http_path":"","l7_latency":0,"dns_query":"api.example.","dns_rcode":3}`,
	}},
	{pipeline.KindFlowEdge, []pipeline.Record{
		&pipeline.FlowEdge{M: meta("nyc-1"), Interval: 10 * time.Second, SourceNamespace: "shop", SourceWorkload: "web", DestNamespace: "shop", DestWorkload: "api",
			Protocol: "TCP", Port: 8080, Flows: 100, Sampled: 90, Drops: 7, DropReasons: map[string]uint64{"POLICY_DENIED": 7}, Requests: 90, Errors: 3,
			LatencyP50: 2 * time.Millisecond, LatencyP90: 9 * time.Millisecond, LatencyP99: 40 * time.Millisecond},
		&pipeline.FlowEdge{M: meta("nyc-1"), Interval: time.Second, SourceNamespace: "shop", SourceWorkload: "web", DestNamespace: "shop", DestWorkload: "api",
			DestCluster: "nbg-aegis", Protocol: "TCP", Port: 8080, Flows: 4, Requests: 2, Errors: 2},
		&pipeline.FlowEdge{M: meta("nyc-1"), Interval: time.Second, SourceNamespace: "shop", SourceWorkload: "web", SourceCluster: "lon-edge", DestNamespace: "shop", DestWorkload: "api",
			Protocol: "TCP", Port: 8080, Flows: 3, Requests: 1},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/nyc-1","site":"nyc","cluster":"destroyer","node":"nyc-1","interval":10000000000,"src_namespace":"shop","src_workload":"web","src_cluster":"","dst_namespace":"shop","dst_workload":"api","dst_cluster":"","protocol":"TCP","port":8080,"flows":100,"sampled":90,"drops":7,"drop_reasons":{"POLICY_DENIED":7},"requests":90,"errors":3,"latency_p50":2000000,"latency_p90":9000000,"latency_p99":40000000}`,
		`{"time":"DAY 01:02:03.123","collector":"test/nyc-1","site":"nyc","cluster":"destroyer","node":"nyc-1","interval":1000000000,"src_namespace":"shop","src_workload":"web","src_cluster":"","dst_namespace":"shop","dst_workload":"api","dst_cluster":"nbg-aegis","protocol":"TCP","port":8080,"flows":4,"sampled":0,"drops":0,"drop_reasons":{},"requests":2,"errors":2,"latency_p50":0,"latency_p90":0,"latency_p99":0}`,
		`{"time":"DAY 01:02:03.123","collector":"test/nyc-1","site":"nyc","cluster":"destroyer","node":"nyc-1","interval":1000000000,"src_namespace":"shop","src_workload":"web","src_cluster":"lon-edge","dst_namespace":"shop","dst_workload":"api","dst_cluster":"","protocol":"TCP","port":8080,"flows":3,"sampled":0,"drops":0,"drop_reasons":{},"requests":1,"errors":0,"latency_p50":0,"latency_p90":0,"latency_p99":0}`,
	}},
	{pipeline.KindProbe, []pipeline.Record{
		&pipeline.Probe{M: meta("lon-probe"), Vantage: "london", Method: "dns", POP: "lon", Service: "api", ClientRegion: "eu-west",
			Target: "api.example.", Answer: "198.51.100.7", Rcode: "NOERROR", Success: true, RTT: 1500 * time.Microsecond},
		&pipeline.Probe{M: meta("lon-probe"), Vantage: "london", Method: "tcp", POP: "par", Service: "api", Target: "127.0.0.1:443", Error: "connection refused"},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/lon-probe","site":"nyc","cluster":"destroyer","node":"lon-probe","vantage":"london","method":"dns","pop":"lon","service":"api","client_region":"eu-west","target":"api.example.","answer":"198.51.100.7","rcode":"NOERROR","success":true,"rtt":1500000,"error":""}`,
		`{"time":"DAY 01:02:03.123","collector":"test/lon-probe","site":"nyc","cluster":"destroyer","node":"lon-probe","vantage":"london","method":"tcp","pop":"par","service":"api","client_region":"","target":"127.0.0.1:443","answer":"","rcode":"","success":false,"rtt":0,"error":"connection refused"}`,
	}},
	{pipeline.KindSteeringDecision, []pipeline.Record{
		&pipeline.SteeringDecision{M: meta("brain-1"), Service: "api", ClientRegion: "eu-west", POP: "lon", OldWeight: 1, NewWeight: 0.25,
			Cause: "slo", Reason: "api-availability burning 14.4x over 1h and 5m at lon", RegretMs: 12.5, Utilisation: 0.8125, Headroom: -37.5},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/brain-1","site":"nyc","cluster":"destroyer","node":"brain-1","service":"api","client_region":"eu-west","pop":"lon","old_weight":1,"new_weight":0.25,"cause":"slo","reason":"api-availability burning 14.4x over 1h and 5m at lon","regret_ms":12.5,"utilisation":0.8125,"headroom":-37.5}`,
	}},
	{pipeline.KindSteeringInputs, []pipeline.Record{
		&pipeline.SteeringInputs{M: meta("brain-1"), Started: t0.Add(-time.Minute), Keyframe: true,
			Cells: []pipeline.SteeringCell{
				{Vantage: "london", POP: "lon", RTT: 1500 * time.Microsecond, LastSeen: t0.Add(-time.Second), LastOK: t0.Add(-time.Second)},
				{Vantage: "paris", POP: "lon", Failures: 3, LastSeen: t0.Add(-2 * time.Second)},
			},
			AlertsChanged: true, Alerts: []pipeline.SteeringAlert{{Name: "MeridianPOPAvailability", Severity: "page", Labels: map[string]string{"pop": "lon"}, ActiveAt: t0.Add(-30 * time.Second)}},
			OverridesChanged: true, Overrides: []pipeline.SteeringOverride{{Action: "drain", POP: "par", Service: "api.", Source: "api"}},
			Loads: []pipeline.SteeringLoad{{POP: "lon", Rate: 812.5, Seen: t0.Add(-3 * time.Second)}, {POP: "par", Rate: 0, Seen: t0.Add(-4 * time.Second)}}},
		&pipeline.SteeringInputs{M: meta("brain-1"), Started: t0.Add(-time.Minute)},
	}, []string{
		`{"time":"DAY 01:02:03.123456789","collector":"test/brain-1","site":"nyc","cluster":"destroyer","node":"brain-1","started":"DAY 01:01:03.123456789","keyframe":true,"cell_vantage":["london","paris"],"cell_pop":["lon","lon"],"cell_rtt":[1500000,0],"cell_failures":[0,3],"cell_last_seen":["DAY 01:02:02.123456789","DAY 01:02:01.123456789"],"cell_last_ok":["DAY 01:02:02.123456789","1970-01-01 00:00:00.000000000"],"alerts_changed":true,"alert_name":["MeridianPOPAvailability"],"alert_severity":["page"],"alert_labels":[{"pop":"lon"}],"alert_active_at":["DAY 01:01:33.123456789"],"overrides_changed":true,"override_action":["drain"],"override_pop":["par"],"override_service":["api."],"override_region":[""],"override_source":["api"],"load_pop":["lon","par"],"load_rate":[812.5,0],"load_seen":["DAY 01:02:00.123456789","DAY 01:01:59.123456789"]}`,
		`{"time":"DAY 01:02:03.123456789","collector":"test/brain-1","site":"nyc","cluster":"destroyer","node":"brain-1","started":"DAY 01:01:03.123456789","keyframe":false,"cell_vantage":[],"cell_pop":[],"cell_rtt":[],"cell_failures":[],"cell_last_seen":[],"cell_last_ok":[],"alerts_changed":false,"alert_name":[],"alert_severity":[],"alert_labels":[],"alert_active_at":[],"overrides_changed":false,"override_action":[],"override_pop":[],"override_service":[],"override_region":[],"override_source":[],"load_pop":[],"load_rate":[],"load_seen":[]}`,
	}},
	{pipeline.KindHAProxyStat, []pipeline.Record{
		&pipeline.HAProxyStat{M: meta("lon-fd-1"), POP: "lon", Proxy: "api", Type: "frontend", Status: "OPEN", Sessions: 12, SessionMax: 9984,
			SessionRate: 250.5, BytesIn: 1e4, BytesOut: 2.5e5, HTTP4xx: 1.5, HTTP5xx: 0.25, Utilisation: 0.5},
		&pipeline.HAProxyStat{M: meta("lon-fd-1"), POP: "lon", Proxy: "pop", Server: "s2", Type: "server", Status: "DOWN", CheckStatus: "L4CON", Queue: 3, ResponseMs: 11},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/lon-fd-1","site":"nyc","cluster":"destroyer","node":"lon-fd-1","pop":"lon","proxy":"api","server":"","type":"frontend","status":"OPEN","check_status":"","sessions":12,"session_max":9984,"session_rate":250.5,"bytes_in":10000,"bytes_out":250000,"queue":0,"http_4xx":1.5,"http_5xx":0.25,"response_ms":0,"utilisation":0.5}`,
		`{"time":"DAY 01:02:03.123","collector":"test/lon-fd-1","site":"nyc","cluster":"destroyer","node":"lon-fd-1","pop":"lon","proxy":"pop","server":"s2","type":"server","status":"DOWN","check_status":"L4CON","sessions":0,"session_max":0,"session_rate":0,"bytes_in":0,"bytes_out":0,"queue":3,"http_4xx":0,"http_5xx":0,"response_ms":11,"utilisation":0}`,
	}},
	{pipeline.KindVRRPState, []pipeline.Record{
		&pipeline.VRRPState{M: meta("lon-fd-1"), POP: "lon", Instance: "VI_1", State: "MASTER", Priority: 150, VIPs: []string{"198.51.100.7"}, HoldsVIP: true, Since: t0.Add(-time.Minute)},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/lon-fd-1","site":"nyc","cluster":"destroyer","node":"lon-fd-1","pop":"lon","instance":"VI_1","state":"MASTER","priority":150,"vips":["198.51.100.7"],"holds_vip":true,"since":"DAY 01:01:03.123"}`,
	}},
	{pipeline.KindVRRPTransition, []pipeline.Record{
		&pipeline.VRRPTransition{M: meta("lon-fd-2"), POP: "lon", Instance: "VI_1", From: "BACKUP", To: "MASTER", Priority: 100, Failover: true, PreviousMaster: "lon-fd-1", Duration: 1250 * time.Millisecond},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/lon-fd-2","site":"nyc","cluster":"destroyer","node":"lon-fd-2","pop":"lon","instance":"VI_1","from_state":"BACKUP","to_state":"MASTER","priority":100,"failover":true,"previous_master":"lon-fd-1","duration":1250000000}`,
	}},
	{pipeline.KindAlertState, []pipeline.Record{
		&pipeline.AlertState{M: meta("brain-1"), Name: "MeridianPOPAvailability", Severity: "page", Labels: map[string]string{"pop": "lon", "slo": "availability"},
			State: pipeline.AlertFiring, ActiveAt: t0.Add(-30 * time.Second)},
		&pipeline.AlertState{M: meta("brain-1"), Name: "MeridianCephHealthWarning", State: pipeline.AlertResolved, Keyframe: true},
	}, []string{
		`{"time":"DAY 01:02:03.123","collector":"test/brain-1","site":"nyc","cluster":"destroyer","node":"brain-1","name":"MeridianPOPAvailability","severity":"page","labels":{"pop":"lon","slo":"availability"},"state":"firing","active_at":"DAY 01:01:33.123","keyframe":false}`,
		`{"time":"DAY 01:02:03.123","collector":"test/brain-1","site":"nyc","cluster":"destroyer","node":"brain-1","name":"MeridianCephHealthWarning","severity":"","labels":{},"state":"resolved","active_at":"1970-01-01 00:00:00.000","keyframe":true}`,
	}},
}

func TestRoundTrip(t *testing.T) {
	// Every column of every kind: a kind left out here would go unchecked.
	for _, k := range pipeline.Kinds {
		if !slices.ContainsFunc(roundTrips, func(rt roundTrip) bool { return rt.kind == k }) {
			t.Errorf("no round trip for %s", k)
		}
	}
	s := storagetest.New(t)
	enc := storage.NewEncoder()
	ctx := context.Background()
	for _, rt := range roundTrips {
		t.Run(rt.kind.String(), func(t *testing.T) {
			native, err := enc.Encode(rt.kind, rt.recs)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Insert(ctx, pipeline.Block{Kind: rt.kind, Rows: len(rt.recs), Token: "rt-" + rt.kind.String(), Native: native}); err != nil {
				t.Fatal(err)
			}
			out, err := s.Query(ctx, "SELECT * FROM "+s.Table(rt.kind)+" SETTINGS output_format_json_quote_64bit_integers = 0, output_format_json_escape_forward_slashes = 0", "JSONEachRow")
			if err != nil {
				t.Fatal(err)
			}
			// Rows come back in the table's sort order: compare as sorted sets.
			got := strings.Split(strings.TrimSpace(string(out)), "\n")
			day := t0.Format("2006-01-02")
			var want []string
			for _, w := range rt.want {
				want = append(want, strings.ReplaceAll(w, `"DAY `, `"`+day+" "))
			}
			slices.Sort(want)
			slices.Sort(got)
			if len(got) != len(want) {
				t.Fatalf("got %d rows, want %d:\n%s", len(got), len(rt.want), out)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("row %d:\n got %s\nwant %s", i, got[i], want[i])
				}
			}
		})
	}
}

func TestEncodeRejectsWrongKind(t *testing.T) {
	_, err := storage.NewEncoder().Encode(pipeline.KindFlow, []pipeline.Record{&pipeline.Probe{}})
	if err == nil || !strings.Contains(err.Error(), "*pipeline.Probe") {
		t.Fatalf("want an error naming the record type, got %v", err)
	}
}

// An open block built a record at a time, with refused Adds between them, and sealed
// twice gives the same bytes as Encode of the same records each time: the pipeline builds
// its blocks this way.
func TestOpenBlockMatchesEncode(t *testing.T) {
	enc := storage.NewEncoder()
	for _, rt := range roundTrips {
		other := newRecord(pipeline.KindProbe)
		if rt.kind == pipeline.KindProbe {
			other = newRecord(pipeline.KindFlow)
		}
		want, err := enc.Encode(rt.kind, rt.recs)
		if err != nil {
			t.Fatal(err)
		}
		b := enc.Open(rt.kind)
		for round := range 2 {
			for _, r := range rt.recs {
				if i, err := b.Add([]pipeline.Record{r, other}); err == nil || i != 1 {
					t.Fatalf("%s: Add with a %T second = %d, %v; want it refused at 1", rt.kind, other, i, err)
				}
				if _, err := b.Add([]pipeline.Record{r}); err != nil {
					t.Fatal(err)
				}
			}
			if b.Rows() != len(rt.recs) {
				t.Fatalf("%s: %d rows, want %d (a refused Add appended)", rt.kind, b.Rows(), len(rt.recs))
			}
			got, err := b.Seal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) || b.Rows() != 0 {
				t.Errorf("%s, seal %d: the open block differs from Encode, or kept %d rows", rt.kind, round, b.Rows())
			}
		}
	}
}

// Rows at the edges of each table's retention are kept: one written an hour inside the
// TTL and one an hour in the future (a collector's clock ahead of ours) both read back.
func TestRowsInsideTTLAreKept(t *testing.T) {
	s := storagetest.New(t)
	enc := storage.NewEncoder()
	ctx := context.Background()
	ttls := storage.DefaultTTLs()
	now := time.Now().UTC()
	for _, rt := range roundTrips {
		table := storage.Tables[rt.kind]
		ttl := time.Duration(ttls[table])
		if ttl == 0 {
			t.Fatalf("%s: no TTL", table)
		}
		var recs []pipeline.Record
		for _, at := range []time.Time{now.Add(-(ttl - time.Hour)), now.Add(time.Hour)} {
			r := newRecord(rt.kind)
			*r.Meta() = pipeline.Meta{Time: at, Collector: "test/ttl", Node: "n"}
			recs = append(recs, r)
		}
		native, err := enc.Encode(rt.kind, recs)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Insert(ctx, pipeline.Block{Kind: rt.kind, Rows: len(recs), Token: "ttl-" + table, Native: native}); err != nil {
			t.Fatal(err)
		}
		out, err := s.Query(ctx, "SELECT count() FROM "+s.Table(rt.kind)+" WHERE collector = 'test/ttl'", "TabSeparated")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != "2" {
			t.Errorf("%s (TTL %s): %s rows read back, want 2", table, ttl, got)
		}
	}
}

// newRecord is an empty record of the kind.
func newRecord(k pipeline.Kind) pipeline.Record {
	switch k {
	case pipeline.KindTunnelStat:
		return &pipeline.TunnelStat{}
	case pipeline.KindOSDStat:
		return &pipeline.OSDStat{}
	case pipeline.KindCephHealth:
		return &pipeline.CephHealth{}
	case pipeline.KindCephPool:
		return &pipeline.CephPool{}
	case pipeline.KindFlow:
		return &pipeline.Flow{}
	case pipeline.KindFlowEdge:
		return &pipeline.FlowEdge{}
	case pipeline.KindProbe:
		return &pipeline.Probe{}
	case pipeline.KindSteeringDecision:
		return &pipeline.SteeringDecision{}
	case pipeline.KindSteeringInputs:
		return &pipeline.SteeringInputs{}
	case pipeline.KindHAProxyStat:
		return &pipeline.HAProxyStat{}
	case pipeline.KindVRRPState:
		return &pipeline.VRRPState{}
	case pipeline.KindVRRPTransition:
		return &pipeline.VRRPTransition{}
	case pipeline.KindAlertState:
		return &pipeline.AlertState{}
	}
	panic("no record for kind " + k.String())
}
