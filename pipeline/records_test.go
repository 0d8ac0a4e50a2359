package pipeline_test

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/pipeline"
)

// The generators below and the SQL beside them produce the same rows: the Go side feeds
// the pipeline, the SQL side is the engine's own INSERT ... SELECT ... FROM numbers(N)
// (the benchmark's baseline) and the expected checksums of the fault tests.

// base is inside every TTL on any date (flows keep 7 days).
var (
	base    = testtime.Day
	baseSQL = testtime.SQL(base, 9)
)

// flow i is unique by l7_latency = i and http_path = /p/i.
func flow(i int) *pipeline.Flow {
	return &pipeline.Flow{
		M: pipeline.Meta{Time: base.Add(time.Duration(i) * time.Millisecond), Collector: "hubble/relay-1",
			Site: "nyc", Cluster: "destroyer", Node: "node-" + strconv.Itoa(i%16)},
		Source: pipeline.Endpoint{Namespace: "shop", Pod: "api-" + strconv.Itoa(i%32), Workload: "api", WorkloadKind: "Deployment",
			Identity: uint32(1000 + i%7), IP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Labels: []string{"app=api"}},
		Destination: pipeline.Endpoint{Namespace: "shop", Pod: "db-" + strconv.Itoa(i%8), Workload: "db", WorkloadKind: "StatefulSet",
			Identity: 2000, IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(i % 8)}), Labels: []string{"app=db"}},
		L4Protocol: "TCP", SourcePort: uint16(30000 + i%30000), DestinationPort: 5432,
		Verdict: "FORWARDED", Direction: "EGRESS", IsReply: i%2 == 1,
		L7Type: "HTTP", HTTPMethod: "GET", HTTPCode: 200, HTTPPath: "/p/" + strconv.Itoa(i),
		L7Latency: time.Duration(i),
	}
}

const flowColumns = `time, collector, site, cluster, node,
 src_namespace, src_pod, src_workload, src_workload_kind, src_identity, src_ip, src_labels,
 dst_namespace, dst_pod, dst_workload, dst_workload_kind, dst_identity, dst_ip, dst_labels,
 l4_protocol, src_port, dst_port, verdict, drop_reason, direction, is_reply,
 l7_type, http_method, http_code, http_path, l7_latency, dns_query, dns_rcode`

var flowSelect = `SELECT ` + baseSQL + ` + toIntervalMillisecond(number), 'hubble/relay-1', 'nyc', 'destroyer', concat('node-', toString(number % 16)),
 'shop', concat('api-', toString(number % 32)), 'api', 'Deployment', 1000 + number % 7, CAST(toIPv4(167772160 + number % 65536) AS IPv6), ['app=api'],
 'shop', concat('db-', toString(number % 8)), 'db', 'StatefulSet', 2000, CAST(toIPv4(167837696 + number % 8) AS IPv6), ['app=db'],
 'TCP', 30000 + number % 30000, 5432, 'FORWARDED', '', 'EGRESS', number % 2 = 1,
 'HTTP', 'GET', 200, concat('/p/', toString(number)), toInt64(number), '', 0`

// tunnel i is unique by rx_bytes = i.
func tunnel(i int) *pipeline.TunnelStat {
	t := base.Add(time.Duration(i) * time.Millisecond)
	return &pipeline.TunnelStat{
		M:         pipeline.Meta{Time: t, Collector: "wireguard/nyc-1", Site: "nyc", Cluster: "destroyer", Node: "node-" + strconv.Itoa(i%64)},
		Interface: "wg0", PublicKey: "pk-" + strconv.Itoa(i%1000), PeerNode: "peer-" + strconv.Itoa(i%1000), PeerSite: "fra",
		Endpoint: "198.51.100.1:51820", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")},
		LastHandshake: t.Add(-5 * time.Second), RxBytes: uint64(i), TxBytes: uint64(2 * i),
		RxRate: float64(i % 1000), TxRate: 1.5, Keepalive: 25 * time.Second, Status: pipeline.StatusOK,
	}
}

const tunnelColumns = `time, collector, site, cluster, node, interface, public_key, peer_node, peer_site,
 endpoint, allowed_ips, last_handshake, rx_bytes, tx_bytes, rx_rate, tx_rate, keepalive, status`

var tunnelSelect = `SELECT ` + baseSQL + ` + toIntervalMillisecond(number), 'wireguard/nyc-1', 'nyc', 'destroyer', concat('node-', toString(number % 64)),
 'wg0', concat('pk-', toString(number % 1000)), concat('peer-', toString(number % 1000)), 'fra',
 '198.51.100.1:51820', ['10.0.0.0/24'], ` + baseSQL + ` + toIntervalMillisecond(number) - toIntervalSecond(5), number, 2 * number,
 toFloat64(number % 1000), 1.5, 25000000000, 'ok'`
