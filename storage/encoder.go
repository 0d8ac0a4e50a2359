package storage

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/meridianhq/meridian/pipeline"
)

// Encoder turns records of one kind into a ClickHouse Native block whose columns match
// the kind's table, at once (Encode) or as they arrive (Open). It is safe for concurrent
// use; an open block is not. Column buffers are reused between blocks: only the returned
// bytes are allocated per block.
type Encoder struct {
	free map[pipeline.Kind]chan columnSet
}

var _ pipeline.Encoder = (*Encoder)(nil)

// keptSets is how many column sets per kind an Encoder keeps between Encode calls. They
// live as long as the Encoder, unlike a sync.Pool's, which every GC cycle empties: the
// buffers of a 50,000-row block would then be regrown (and their fresh pages faulted in)
// for most blocks.
const keptSets = 2

// NewEncoder returns an Encoder for every kind of pipeline.Kinds.
func NewEncoder() *Encoder {
	e := &Encoder{free: map[pipeline.Kind]chan columnSet{}}
	for kind := range columnSets {
		e.free[kind] = make(chan columnSet, keptSets)
	}
	return e
}

func (e *Encoder) get(kind pipeline.Kind) columnSet {
	select {
	case set := <-e.free[kind]:
		return set
	default:
		return columnSets[kind]()
	}
}

func (e *Encoder) put(kind pipeline.Kind, set columnSet) {
	select {
	case e.free[kind] <- set:
	default: // more concurrent callers than kept sets: let this one go
	}
}

// Encode returns the Native block of recs, which must all be of kind.
func (e *Encoder) Encode(kind pipeline.Kind, recs []pipeline.Record) ([]byte, error) {
	if _, ok := e.free[kind]; !ok {
		return nil, fmt.Errorf("storage encode: unknown kind %d", kind)
	}
	b := &block{kind: kind, set: e.get(kind)}
	defer e.put(kind, b.set)
	if _, err := b.Add(recs); err != nil {
		return nil, err
	}
	return b.Seal()
}

// Open returns an empty block of kind, which holds its own column buffers: the pipeline
// keeps one per kind and adds records to it as they arrive, so a batch waiting to be
// sealed holds its columns (pointer-free buffers, a fraction of the records' size)
// instead of its records. A kind unknown to the Encoder refuses every record.
func (e *Encoder) Open(kind pipeline.Kind) pipeline.OpenBlock {
	if _, ok := e.free[kind]; !ok {
		return &block{kind: kind}
	}
	return &block{kind: kind, set: e.get(kind)}
}

// block is a Native block being built.
type block struct {
	kind pipeline.Kind
	set  columnSet // nil: an unknown kind
	rows int
}

func (b *block) Add(recs []pipeline.Record) (int, error) {
	if b.set == nil {
		return 0, fmt.Errorf("storage encode: unknown kind %d", b.kind)
	}
	if i := b.set.check(recs); i >= 0 {
		return i, fmt.Errorf("storage encode %s: record %d is %T, not %s", b.kind, i, recs[i], b.kind)
	}
	b.set.add(recs)
	b.rows += len(recs)
	return 0, nil
}

func (b *block) Rows() int { return b.rows }

func (b *block) Seal() ([]byte, error) {
	if b.set == nil {
		return nil, fmt.Errorf("storage encode: unknown kind %d", b.kind)
	}
	c := b.set.cols()
	defer func() {
		c.input.Reset()
		b.rows = 0
	}()
	c.buf.Reset()
	blk := proto.Block{Columns: len(c.input), Rows: b.rows}
	// Version 0 is the Native format (what INSERT ... FORMAT Native reads): no block
	// info, no per-column serialization flags.
	if err := blk.EncodeRawBlock(&c.buf, 0, c.input); err != nil {
		return nil, fmt.Errorf("storage encode %s: %w", b.kind, err)
	}
	out := make([]byte, len(c.buf.Buf))
	copy(out, c.buf.Buf)
	return out, nil
}

// columnSet is the reusable columns of one kind.
type columnSet interface {
	cols() *columns
	// check returns -1, or the index of the first record not of the set's kind.
	check(recs []pipeline.Record) int
	// add appends recs, which check accepted.
	add(recs []pipeline.Record)
}

// columnSets are the tables' columns in table order, after the Meta columns every table
// starts with. Column names are the snake_case Go field names.
var columnSets = map[pipeline.Kind]func() columnSet{
	pipeline.KindTunnelStat: table(ms,
		col("interface", lc, func(r *pipeline.TunnelStat) string { return r.Interface }),
		col("public_key", str, func(r *pipeline.TunnelStat) string { return r.PublicKey }),
		col("peer_node", lc, func(r *pipeline.TunnelStat) string { return r.PeerNode }),
		col("peer_site", lc, func(r *pipeline.TunnelStat) string { return r.PeerSite }),
		col("endpoint", lc, func(r *pipeline.TunnelStat) string { return r.Endpoint }),
		allowedIPs,
		col("last_handshake", timeCol(ms), func(r *pipeline.TunnelStat) time.Time { return ts(r.LastHandshake) }),
		col("rx_bytes", u64, func(r *pipeline.TunnelStat) uint64 { return r.RxBytes }),
		col("tx_bytes", u64, func(r *pipeline.TunnelStat) uint64 { return r.TxBytes }),
		col("rx_rate", f64, func(r *pipeline.TunnelStat) float64 { return r.RxRate }),
		col("tx_rate", f64, func(r *pipeline.TunnelStat) float64 { return r.TxRate }),
		col("keepalive", i64, func(r *pipeline.TunnelStat) int64 { return int64(r.Keepalive) }),
		col("status", lc, func(r *pipeline.TunnelStat) string { return r.Status }),
	),
	pipeline.KindOSDStat: table(ms,
		col("fsid", lc, func(r *pipeline.OSDStat) string { return r.FSID }),
		col("osd", u32, func(r *pipeline.OSDStat) uint32 { return r.OSD }),
		col("host", lc, func(r *pipeline.OSDStat) string { return r.Host }),
		col("device_class", lc, func(r *pipeline.OSDStat) string { return r.DeviceClass }),
		col("up", boolean, func(r *pipeline.OSDStat) bool { return r.Up }),
		col("in", boolean, func(r *pipeline.OSDStat) bool { return r.In }),
		col("commit_latency_ms", f64, func(r *pipeline.OSDStat) float64 { return r.CommitLatencyMs }),
		col("apply_latency_ms", f64, func(r *pipeline.OSDStat) float64 { return r.ApplyLatencyMs }),
		col("read_latency_ms", f64, func(r *pipeline.OSDStat) float64 { return r.ReadLatencyMs }),
		col("write_latency_ms", f64, func(r *pipeline.OSDStat) float64 { return r.WriteLatencyMs }),
		col("read_ops", f64, func(r *pipeline.OSDStat) float64 { return r.ReadOps }),
		col("write_ops", f64, func(r *pipeline.OSDStat) float64 { return r.WriteOps }),
		col("read_bytes", f64, func(r *pipeline.OSDStat) float64 { return r.ReadBytes }),
		col("write_bytes", f64, func(r *pipeline.OSDStat) float64 { return r.WriteBytes }),
		col("weight", f64, func(r *pipeline.OSDStat) float64 { return r.Weight }),
	),
	pipeline.KindCephHealth: table(ms,
		col("fsid", lc, func(r *pipeline.CephHealth) string { return r.FSID }),
		col("status", lc, func(r *pipeline.CephHealth) string { return r.Status }),
		col("checks", lcArr, func(r *pipeline.CephHealth) []string { return r.Checks }),
		col("osds_total", u32, func(r *pipeline.CephHealth) uint32 { return r.OSDsTotal }),
		col("osds_up", u32, func(r *pipeline.CephHealth) uint32 { return r.OSDsUp }),
		col("osds_in", u32, func(r *pipeline.CephHealth) uint32 { return r.OSDsIn }),
		col("flags", lcArr, func(r *pipeline.CephHealth) []string { return r.Flags }),
	),
	pipeline.KindCephPool: table(ms,
		col("fsid", lc, func(r *pipeline.CephPool) string { return r.FSID }),
		col("pool", lc, func(r *pipeline.CephPool) string { return r.Pool }),
		col("pool_id", u32, func(r *pipeline.CephPool) uint32 { return r.PoolID }),
		col("read_ops", f64, func(r *pipeline.CephPool) float64 { return r.ReadOps }),
		col("write_ops", f64, func(r *pipeline.CephPool) float64 { return r.WriteOps }),
		col("read_bytes", f64, func(r *pipeline.CephPool) float64 { return r.ReadBytes }),
		col("write_bytes", f64, func(r *pipeline.CephPool) float64 { return r.WriteBytes }),
		col("stored_bytes", u64, func(r *pipeline.CephPool) uint64 { return r.StoredBytes }),
	),
	pipeline.KindFlow: table(ns,
		nested(func(r *pipeline.Flow) *pipeline.Endpoint { return &r.Source }, endpoint("src_")...),
		nested(func(r *pipeline.Flow) *pipeline.Endpoint { return &r.Destination }, endpoint("dst_")...),
		col("l4_protocol", lc, func(r *pipeline.Flow) string { return r.L4Protocol }),
		col("src_port", u16, func(r *pipeline.Flow) uint16 { return r.SourcePort }),
		col("dst_port", u16, func(r *pipeline.Flow) uint16 { return r.DestinationPort }),
		col("verdict", lc, func(r *pipeline.Flow) string { return r.Verdict }),
		col("drop_reason", lc, func(r *pipeline.Flow) string { return r.DropReason }),
		col("direction", lc, func(r *pipeline.Flow) string { return r.Direction }),
		col("is_reply", boolean, func(r *pipeline.Flow) bool { return r.IsReply }),
		col("l7_type", lc, func(r *pipeline.Flow) string { return r.L7Type }),
		col("http_method", lc, func(r *pipeline.Flow) string { return r.HTTPMethod }),
		col("http_code", u16, func(r *pipeline.Flow) uint16 { return r.HTTPCode }),
		col("http_path", str, func(r *pipeline.Flow) string { return r.HTTPPath }),
		col("l7_latency", i64, func(r *pipeline.Flow) int64 { return int64(r.L7Latency) }),
		col("dns_query", str, func(r *pipeline.Flow) string { return r.DNSQuery }),
		col("dns_rcode", u16, func(r *pipeline.Flow) uint16 { return r.DNSRcode }),
	),
	pipeline.KindFlowEdge: table(ms,
		col("interval", i64, func(r *pipeline.FlowEdge) int64 { return int64(r.Interval) }),
		col("src_namespace", lc, func(r *pipeline.FlowEdge) string { return r.SourceNamespace }),
		col("src_workload", lc, func(r *pipeline.FlowEdge) string { return r.SourceWorkload }),
		col("src_cluster", lc, func(r *pipeline.FlowEdge) string { return r.SourceCluster }),
		col("dst_namespace", lc, func(r *pipeline.FlowEdge) string { return r.DestNamespace }),
		col("dst_workload", lc, func(r *pipeline.FlowEdge) string { return r.DestWorkload }),
		col("dst_cluster", lc, func(r *pipeline.FlowEdge) string { return r.DestCluster }),
		col("protocol", lc, func(r *pipeline.FlowEdge) string { return r.Protocol }),
		col("port", u16, func(r *pipeline.FlowEdge) uint16 { return r.Port }),
		col("flows", u64, func(r *pipeline.FlowEdge) uint64 { return r.Flows }),
		col("sampled", u64, func(r *pipeline.FlowEdge) uint64 { return r.Sampled }),
		col("drops", u64, func(r *pipeline.FlowEdge) uint64 { return r.Drops }),
		col("drop_reasons", lcCounts, func(r *pipeline.FlowEdge) map[string]uint64 { return r.DropReasons }),
		col("requests", u64, func(r *pipeline.FlowEdge) uint64 { return r.Requests }),
		col("errors", u64, func(r *pipeline.FlowEdge) uint64 { return r.Errors }),
		col("latency_p50", i64, func(r *pipeline.FlowEdge) int64 { return int64(r.LatencyP50) }),
		col("latency_p90", i64, func(r *pipeline.FlowEdge) int64 { return int64(r.LatencyP90) }),
		col("latency_p99", i64, func(r *pipeline.FlowEdge) int64 { return int64(r.LatencyP99) }),
	),
	pipeline.KindProbe: table(ms,
		col("vantage", lc, func(r *pipeline.Probe) string { return r.Vantage }),
		col("method", lc, func(r *pipeline.Probe) string { return r.Method }),
		col("pop", lc, func(r *pipeline.Probe) string { return r.POP }),
		col("service", lc, func(r *pipeline.Probe) string { return r.Service }),
		col("client_region", lc, func(r *pipeline.Probe) string { return r.ClientRegion }),
		col("target", lc, func(r *pipeline.Probe) string { return r.Target }),
		col("answer", str, func(r *pipeline.Probe) string { return r.Answer }),
		col("rcode", lc, func(r *pipeline.Probe) string { return r.Rcode }),
		col("success", boolean, func(r *pipeline.Probe) bool { return r.Success }),
		col("rtt", i64, func(r *pipeline.Probe) int64 { return int64(r.RTT) }),
		col("error", str, func(r *pipeline.Probe) string { return r.Error }),
	),
	pipeline.KindSteeringDecision: table(ms,
		col("service", lc, func(r *pipeline.SteeringDecision) string { return r.Service }),
		col("client_region", lc, func(r *pipeline.SteeringDecision) string { return r.ClientRegion }),
		col("pop", lc, func(r *pipeline.SteeringDecision) string { return r.POP }),
		col("old_weight", f64, func(r *pipeline.SteeringDecision) float64 { return r.OldWeight }),
		col("new_weight", f64, func(r *pipeline.SteeringDecision) float64 { return r.NewWeight }),
		col("cause", lc, func(r *pipeline.SteeringDecision) string { return r.Cause }),
		col("reason", str, func(r *pipeline.SteeringDecision) string { return r.Reason }),
		col("regret_ms", f64, func(r *pipeline.SteeringDecision) float64 { return r.RegretMs }),
		col("utilisation", f64, func(r *pipeline.SteeringDecision) float64 { return r.Utilisation }),
		col("headroom", f64, func(r *pipeline.SteeringDecision) float64 { return r.Headroom }),
	),
	// One steering tick per row; its cells, alerts, overrides and loads are parallel
	// arrays (ClickHouse's Nested layout, written as plain arrays).
	pipeline.KindSteeringInputs: table(ns,
		col("started", timeCol(ns), func(r *pipeline.SteeringInputs) time.Time { return r.Started }),
		col("keyframe", boolean, func(r *pipeline.SteeringInputs) bool { return r.Keyframe }),
		each("cell_vantage", lc, cells, func(x *pipeline.SteeringCell) string { return x.Vantage }),
		each("cell_pop", lc, cells, func(x *pipeline.SteeringCell) string { return x.POP }),
		each("cell_rtt", i64, cells, func(x *pipeline.SteeringCell) int64 { return int64(x.RTT) }),
		each("cell_failures", u32, cells, func(x *pipeline.SteeringCell) uint32 { return uint32(max(x.Failures, 0)) }),
		each("cell_last_seen", timeCol(ns), cells, func(x *pipeline.SteeringCell) time.Time { return x.LastSeen }),
		each("cell_last_ok", timeCol(ns), cells, func(x *pipeline.SteeringCell) time.Time { return x.LastOK }),
		col("alerts_changed", boolean, func(r *pipeline.SteeringInputs) bool { return r.AlertsChanged }),
		each("alert_name", str, alerts, func(x *pipeline.SteeringAlert) string { return x.Name }),
		each("alert_severity", lc, alerts, func(x *pipeline.SteeringAlert) string { return x.Severity }),
		each("alert_labels", strMap, alerts, func(x *pipeline.SteeringAlert) map[string]string { return x.Labels }),
		each("alert_active_at", timeCol(ns), alerts, func(x *pipeline.SteeringAlert) time.Time { return x.ActiveAt }),
		col("overrides_changed", boolean, func(r *pipeline.SteeringInputs) bool { return r.OverridesChanged }),
		each("override_action", lc, overrides, func(x *pipeline.SteeringOverride) string { return x.Action }),
		each("override_pop", lc, overrides, func(x *pipeline.SteeringOverride) string { return x.POP }),
		each("override_service", lc, overrides, func(x *pipeline.SteeringOverride) string { return x.Service }),
		each("override_region", lc, overrides, func(x *pipeline.SteeringOverride) string { return x.Region }),
		each("override_source", lc, overrides, func(x *pipeline.SteeringOverride) string { return x.Source }),
		each("load_pop", lc, loads, func(x *pipeline.SteeringLoad) string { return x.POP }),
		each("load_rate", f64, loads, func(x *pipeline.SteeringLoad) float64 { return x.Rate }),
		each("load_seen", timeCol(ns), loads, func(x *pipeline.SteeringLoad) time.Time { return x.Seen }),
	),
	pipeline.KindHAProxyStat: table(ms,
		col("pop", lc, func(r *pipeline.HAProxyStat) string { return r.POP }),
		col("proxy", lc, func(r *pipeline.HAProxyStat) string { return r.Proxy }),
		col("server", lc, func(r *pipeline.HAProxyStat) string { return r.Server }),
		col("type", lc, func(r *pipeline.HAProxyStat) string { return r.Type }),
		col("status", lc, func(r *pipeline.HAProxyStat) string { return r.Status }),
		col("check_status", lc, func(r *pipeline.HAProxyStat) string { return r.CheckStatus }),
		col("sessions", u64, func(r *pipeline.HAProxyStat) uint64 { return r.Sessions }),
		col("session_max", u64, func(r *pipeline.HAProxyStat) uint64 { return r.SessionMax }),
		col("session_rate", f64, func(r *pipeline.HAProxyStat) float64 { return r.SessionRate }),
		col("bytes_in", f64, func(r *pipeline.HAProxyStat) float64 { return r.BytesIn }),
		col("bytes_out", f64, func(r *pipeline.HAProxyStat) float64 { return r.BytesOut }),
		col("queue", u64, func(r *pipeline.HAProxyStat) uint64 { return r.Queue }),
		col("http_4xx", f64, func(r *pipeline.HAProxyStat) float64 { return r.HTTP4xx }),
		col("http_5xx", f64, func(r *pipeline.HAProxyStat) float64 { return r.HTTP5xx }),
		col("response_ms", f64, func(r *pipeline.HAProxyStat) float64 { return r.ResponseMs }),
		col("utilisation", f64, func(r *pipeline.HAProxyStat) float64 { return r.Utilisation }),
	),
	pipeline.KindVRRPState: table(ms,
		col("pop", lc, func(r *pipeline.VRRPState) string { return r.POP }),
		col("instance", lc, func(r *pipeline.VRRPState) string { return r.Instance }),
		col("state", lc, func(r *pipeline.VRRPState) string { return r.State }),
		col("priority", u32, func(r *pipeline.VRRPState) uint32 { return r.Priority }),
		col("vips", lcArr, func(r *pipeline.VRRPState) []string { return r.VIPs }),
		col("holds_vip", boolean, func(r *pipeline.VRRPState) bool { return r.HoldsVIP }),
		col("since", timeCol(ms), func(r *pipeline.VRRPState) time.Time { return ts(r.Since) }),
	),
	pipeline.KindVRRPTransition: table(ms,
		col("pop", lc, func(r *pipeline.VRRPTransition) string { return r.POP }),
		col("instance", lc, func(r *pipeline.VRRPTransition) string { return r.Instance }),
		col("from_state", lc, func(r *pipeline.VRRPTransition) string { return r.From }),
		col("to_state", lc, func(r *pipeline.VRRPTransition) string { return r.To }),
		col("priority", u32, func(r *pipeline.VRRPTransition) uint32 { return r.Priority }),
		col("failover", boolean, func(r *pipeline.VRRPTransition) bool { return r.Failover }),
		col("previous_master", lc, func(r *pipeline.VRRPTransition) string { return r.PreviousMaster }),
		col("duration", i64, func(r *pipeline.VRRPTransition) int64 { return int64(r.Duration) }),
	),
	pipeline.KindAlertState: table(ms,
		col("name", str, func(r *pipeline.AlertState) string { return r.Name }),
		col("severity", lc, func(r *pipeline.AlertState) string { return r.Severity }),
		col("labels", lcKeyMap, func(r *pipeline.AlertState) map[string]string { return r.Labels }),
		col("state", lc, func(r *pipeline.AlertState) string { return r.State }),
		col("active_at", timeCol(ms), func(r *pipeline.AlertState) time.Time { return ts(r.ActiveAt) }),
		col("keyframe", boolean, func(r *pipeline.AlertState) bool { return r.Keyframe }),
	),
}

// metaFields are the leading columns of every table.
func metaFields(precision proto.Precision) []field[pipeline.Meta] {
	return []field[pipeline.Meta]{
		col("time", timeCol(precision), func(m *pipeline.Meta) time.Time { return ts(m.Time) }),
		col("collector", lc, func(m *pipeline.Meta) string { return m.Collector }),
		col("site", lc, func(m *pipeline.Meta) string { return m.Site }),
		col("cluster", lc, func(m *pipeline.Meta) string { return m.Cluster }),
		col("node", lc, func(m *pipeline.Meta) string { return m.Node }),
	}
}

// endpoint is a flow endpoint's columns, prefixed src_ or dst_.
func endpoint(prefix string) []field[pipeline.Endpoint] {
	return []field[pipeline.Endpoint]{
		col(prefix+"namespace", lc, func(e *pipeline.Endpoint) string { return e.Namespace }),
		col(prefix+"pod", lc, func(e *pipeline.Endpoint) string { return e.Pod }),
		col(prefix+"workload", lc, func(e *pipeline.Endpoint) string { return e.Workload }),
		col(prefix+"workload_kind", lc, func(e *pipeline.Endpoint) string { return e.WorkloadKind }),
		col(prefix+"identity", u32, func(e *pipeline.Endpoint) uint32 { return e.Identity }),
		col(prefix+"ip", ip, func(e *pipeline.Endpoint) proto.IPv6 { return ip6(e.IP) }),
		col(prefix+"labels", lcArr, func(e *pipeline.Endpoint) []string { return e.Labels }),
	}
}

func cells(r *pipeline.SteeringInputs) []pipeline.SteeringCell         { return r.Cells }
func alerts(r *pipeline.SteeringInputs) []pipeline.SteeringAlert       { return r.Alerts }
func overrides(r *pipeline.SteeringInputs) []pipeline.SteeringOverride { return r.Overrides }
func loads(r *pipeline.SteeringInputs) []pipeline.SteeringLoad         { return r.Loads }

// allowedIPs stores a peer's prefixes as text without an allocation per row: they repeat
// in every one of its rows. The cache, per column set, is bounded by dropping it when full.
func allowedIPs(c *columns) func([]*pipeline.TunnelStat) {
	text := map[netip.Prefix]string{}
	prefixText := func(p *netip.Prefix) string {
		if s, ok := text[*p]; ok {
			return s
		}
		if len(text) >= 1<<14 {
			clear(text)
		}
		s := p.String()
		text[*p] = s
		return s
	}
	return each("allowed_ips", lc, func(r *pipeline.TunnelStat) []netip.Prefix { return r.AllowedIPs }, prefixText)(c)
}

// columns are a table's columns in order, and the buffer they are encoded into.
type columns struct {
	input proto.Input
	buf   proto.Buffer
}

func (c *columns) cols() *columns { return c }

func addCol[T proto.ColInput](c *columns, name string, col T) T {
	c.input = append(c.input, proto.InputColumn{Name: name, Data: col})
	return col
}

// A field is one or more adjacent columns of a table, filled from records of type R:
// it adds its columns to c and returns what appends a run of records to them. Appending
// a column at a time over a run keeps each column's loop tight (one call of a getter
// per value, no reflection) while the run's records stay in cache.
type field[R any] func(c *columns) func(rows []*R)

// run is how many records a field appends at a time.
const run = 256

// col is a column of type typ holding get(r).
func col[R, V any](name string, typ func() proto.ColumnOf[V], get func(*R) V) field[R] {
	return func(c *columns) func([]*R) {
		col := addCol(c, name, typ())
		return func(rows []*R) {
			for _, r := range rows {
				col.Append(get(r))
			}
		}
	}
}

// nested is the fields of the struct get(r) points to.
func nested[R, E any](get func(*R) *E, fields ...field[E]) field[R] {
	return func(c *columns) func([]*R) {
		adds := bind(c, fields)
		var es []*E
		return func(rows []*R) {
			es = es[:0]
			for _, r := range rows {
				es = append(es, get(r))
			}
			for _, add := range adds {
				add(es)
			}
			clear(es) // the records are not the block's to keep
		}
	}
}

// each is an array column of type Array(typ) holding get(x) for each x of items(r).
func each[R, E, V any](name string, typ func() proto.ColumnOf[V], items func(*R) []E, get func(*E) V) field[R] {
	return func(c *columns) func([]*R) {
		col := addCol(c, name, proto.NewArray(typ()))
		var vals []V
		return func(rows []*R) {
			for _, r := range rows {
				vals = vals[:0]
				xs := items(r)
				for i := range xs {
					vals = append(vals, get(&xs[i]))
				}
				col.Append(vals)
			}
		}
	}
}

func bind[R any](c *columns, fields []field[R]) []func([]*R) {
	adds := make([]func([]*R), len(fields))
	for i, f := range fields {
		adds[i] = f(c)
	}
	return adds
}

// tableCols are the columns of a kind whose records are *R.
type tableCols[R any] struct {
	columns
	meta   []func([]*pipeline.Meta)
	fields []func([]*R)
	metas  []*pipeline.Meta
	rows   []*R
}

// table is a kind's columns: the Meta columns (time at precision), then fields.
func table[R any](precision proto.Precision, fields ...field[R]) func() columnSet {
	return func() columnSet {
		t := &tableCols[R]{}
		t.meta = bind(&t.columns, metaFields(precision))
		t.fields = bind(&t.columns, fields)
		return t
	}
}

func (t *tableCols[R]) check(recs []pipeline.Record) int {
	for i, rec := range recs {
		if r, ok := any(rec).(*R); !ok || r == nil {
			return i
		}
	}
	return -1
}

func (t *tableCols[R]) add(recs []pipeline.Record) {
	for start := 0; start < len(recs); start += run {
		t.metas, t.rows = t.metas[:0], t.rows[:0]
		for _, rec := range recs[start:min(start+run, len(recs))] {
			t.metas, t.rows = append(t.metas, rec.Meta()), append(t.rows, any(rec).(*R))
		}
		for _, add := range t.meta {
			add(t.metas)
		}
		for _, add := range t.fields {
			add(t.rows)
		}
	}
	clear(t.metas[:cap(t.metas)]) // the records are not the block's to keep
	clear(t.rows[:cap(t.rows)])
}

// The columns' types: what the tables declare.
func lc() proto.ColumnOf[string]      { return newLowCard() }
func str() proto.ColumnOf[string]     { return new(proto.ColStr) }
func u16() proto.ColumnOf[uint16]     { return new(proto.ColUInt16) }
func u32() proto.ColumnOf[uint32]     { return new(proto.ColUInt32) }
func u64() proto.ColumnOf[uint64]     { return new(proto.ColUInt64) }
func i64() proto.ColumnOf[int64]      { return new(proto.ColInt64) }
func f64() proto.ColumnOf[float64]    { return new(proto.ColFloat64) }
func boolean() proto.ColumnOf[bool]   { return new(proto.ColBool) }
func ip() proto.ColumnOf[proto.IPv6]  { return new(proto.ColIPv6) }
func lcArr() proto.ColumnOf[[]string] { return proto.NewArray(lc()) }
func strMap() proto.ColumnOf[map[string]string] {
	return sortedMap[string]{proto.NewMap[string, string](str(), str())}
}
func lcKeyMap() proto.ColumnOf[map[string]string] {
	return sortedMap[string]{proto.NewMap[string, string](lc(), str())}
}
func lcCounts() proto.ColumnOf[map[string]uint64] {
	return sortedMap[uint64]{proto.NewMap[string, uint64](lc(), u64())}
}

// sortedMap stores a Go map's entries in key order: a ClickHouse Map keeps the order it
// was given, and Go's iteration order is random, so the same labels would otherwise be
// stored (and compared, grouped, matched) as different values.
type sortedMap[V any] struct{ *proto.ColMap[string, V] }

func (c sortedMap[V]) Append(m map[string]V) {
	kv := make([]proto.KV[string, V], 0, len(m))
	for k, v := range m {
		kv = append(kv, proto.KV[string, V]{Key: k, Value: v})
	}
	slices.SortFunc(kv, func(a, b proto.KV[string, V]) int { return strings.Compare(a.Key, b.Key) })
	c.AppendKV(kv)
}

func (c sortedMap[V]) AppendArr(v []map[string]V) {
	for _, m := range v {
		c.Append(m)
	}
}

func timeCol(precision proto.Precision) func() proto.ColumnOf[time.Time] {
	return func() proto.ColumnOf[time.Time] {
		return new(proto.ColDateTime64).WithPrecision(precision).WithLocation(time.UTC)
	}
}

// ts stores a zero Go time (e.g. "never handshaked") as the epoch, the zero of DateTime64.
func ts(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0)
	}
	return t
}

func ip6(a netip.Addr) proto.IPv6 {
	if !a.IsValid() {
		return proto.IPv6{}
	}
	return a.As16()
}

const (
	ms = proto.PrecisionMilli
	ns = proto.PrecisionNano
)
