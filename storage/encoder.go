package storage

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/meridianhq/meridian/pipeline"
)

// Encoder turns records of one kind into a ClickHouse Native block whose columns match
// the kind's table. It is safe for concurrent use and reuses its column buffers between
// calls: only the returned bytes are allocated per block.
type Encoder struct {
	free map[pipeline.Kind]chan columnSet
}

var _ pipeline.Encoder = (*Encoder)(nil)

// keptSets is how many column sets per kind an Encoder keeps between calls: the pipeline
// encodes one batch per kind at a time. They live as long as the Encoder, unlike a
// sync.Pool's, which every GC cycle empties: the buffers of a 50,000-row block would then
// be regrown (and their fresh pages faulted in) for most blocks.
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
	set := e.get(kind)
	defer e.put(kind, set)
	c := set.cols()
	c.input.Reset()
	for i, r := range recs {
		if r == nil || r.Kind() != kind || !set.add(r) {
			return nil, fmt.Errorf("storage encode %s: record %d is %T, not %s", kind, i, r, kind)
		}
	}
	c.buf.Reset()
	b := proto.Block{Columns: len(c.input), Rows: len(recs)}
	// Version 0 is the Native format (what INSERT ... FORMAT Native reads): no block
	// info, no per-column serialization flags.
	if err := b.EncodeRawBlock(&c.buf, 0, c.input); err != nil {
		return nil, fmt.Errorf("storage encode %s: %w", kind, err)
	}
	out := make([]byte, len(c.buf.Buf))
	copy(out, c.buf.Buf)
	return out, nil
}

// columnSet is the reusable columns of one kind.
type columnSet interface {
	cols() *columns
	add(r pipeline.Record) bool
}

var columnSets = map[pipeline.Kind]func() columnSet{
	pipeline.KindTunnelStat:       newTunnelCols,
	pipeline.KindOSDStat:          newOSDCols,
	pipeline.KindCephHealth:       newHealthCols,
	pipeline.KindCephPool:         newPoolCols,
	pipeline.KindFlow:             newFlowCols,
	pipeline.KindFlowEdge:         newEdgeCols,
	pipeline.KindProbe:            newProbeCols,
	pipeline.KindSteeringDecision: newSteeringCols,
	pipeline.KindSteeringInputs:   newInputsCols,
	pipeline.KindHAProxyStat:      newHAProxyCols,
	pipeline.KindVRRPState:        newVRRPStateCols,
	pipeline.KindVRRPTransition:   newVRRPTransitionCols,
	pipeline.KindAlertState:       newAlertCols,
}

// columns declares a table's columns in order; each constructor returns the typed column
// that the kind's add method appends to.
type columns struct {
	input proto.Input
	buf   proto.Buffer
}

func (c *columns) cols() *columns { return c }

func addCol[T proto.ColInput](c *columns, name string, col T) T {
	c.input = append(c.input, proto.InputColumn{Name: name, Data: col})
	return col
}

func (c *columns) time(name string, precision proto.Precision) *proto.ColDateTime64 {
	return addCol(c, name, new(proto.ColDateTime64).WithPrecision(precision).WithLocation(time.UTC))
}
func (c *columns) lc(name string) *lowCard { return addCol(c, name, newLowCard()) }
func (c *columns) lcArr(name string) *proto.ColArr[string] {
	return addCol(c, name, proto.NewArray[string](newLowCard()))
}
func (c *columns) str(name string) *proto.ColStr      { return addCol(c, name, new(proto.ColStr)) }
func (c *columns) u16(name string) *proto.ColUInt16   { return addCol(c, name, new(proto.ColUInt16)) }
func (c *columns) u32(name string) *proto.ColUInt32   { return addCol(c, name, new(proto.ColUInt32)) }
func (c *columns) u64(name string) *proto.ColUInt64   { return addCol(c, name, new(proto.ColUInt64)) }
func (c *columns) i64(name string) *proto.ColInt64    { return addCol(c, name, new(proto.ColInt64)) }
func (c *columns) f64(name string) *proto.ColFloat64  { return addCol(c, name, new(proto.ColFloat64)) }
func (c *columns) boolean(name string) *proto.ColBool { return addCol(c, name, new(proto.ColBool)) }
func (c *columns) ip(name string) *proto.ColIPv6      { return addCol(c, name, new(proto.ColIPv6)) }
func (c *columns) strMap(name string) *proto.ColMap[string, uint64] {
	return addCol(c, name, proto.NewMap[string, uint64](newLowCard(), new(proto.ColUInt64)))
}

// metaCols are the leading columns of every table.
type metaCols struct {
	time                           *proto.ColDateTime64
	collector, site, cluster, node *lowCard
}

func (c *columns) meta(precision proto.Precision) metaCols {
	return metaCols{
		time: c.time("time", precision), collector: c.lc("collector"),
		site: c.lc("site"), cluster: c.lc("cluster"), node: c.lc("node"),
	}
}

func (m metaCols) add(x *pipeline.Meta) {
	m.time.Append(ts(x.Time))
	m.collector.Append(x.Collector)
	m.site.Append(x.Site)
	m.cluster.Append(x.Cluster)
	m.node.Append(x.Node)
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

type tunnelCols struct {
	columns
	meta                                        metaCols
	iface, peerNode, peerSite, endpoint, status *lowCard
	publicKey                                   *proto.ColStr
	allowedIPs                                  *proto.ColArr[string]
	lastHandshake                               *proto.ColDateTime64
	rxBytes, txBytes                            *proto.ColUInt64
	rxRate, txRate                              *proto.ColFloat64
	keepalive                                   *proto.ColInt64
	scratch                                     []string
	prefixes                                    map[netip.Prefix]string
}

// prefixText is p.String() without an allocation per row: a peer's allowed IPs repeat in
// every one of its rows. The cache is bounded by dropping it when full.
func (c *tunnelCols) prefixText(p netip.Prefix) string {
	if s, ok := c.prefixes[p]; ok {
		return s
	}
	if len(c.prefixes) >= 1<<14 {
		clear(c.prefixes)
	}
	s := p.String()
	c.prefixes[p] = s
	return s
}

func newTunnelCols() columnSet {
	c := &tunnelCols{prefixes: map[netip.Prefix]string{}}
	c.meta = c.columns.meta(ms)
	c.iface = c.lc("interface")
	c.publicKey = c.str("public_key")
	c.peerNode = c.lc("peer_node")
	c.peerSite = c.lc("peer_site")
	c.endpoint = c.lc("endpoint")
	c.allowedIPs = c.lcArr("allowed_ips")
	c.lastHandshake = c.time("last_handshake", ms)
	c.rxBytes = c.u64("rx_bytes")
	c.txBytes = c.u64("tx_bytes")
	c.rxRate = c.f64("rx_rate")
	c.txRate = c.f64("tx_rate")
	c.keepalive = c.i64("keepalive")
	c.status = c.lc("status")
	return c
}

func (c *tunnelCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.TunnelStat)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.iface.Append(r.Interface)
	c.publicKey.Append(r.PublicKey)
	c.peerNode.Append(r.PeerNode)
	c.peerSite.Append(r.PeerSite)
	c.endpoint.Append(r.Endpoint)
	c.scratch = c.scratch[:0]
	for _, p := range r.AllowedIPs {
		c.scratch = append(c.scratch, c.prefixText(p))
	}
	c.allowedIPs.Append(c.scratch)
	c.lastHandshake.Append(ts(r.LastHandshake))
	c.rxBytes.Append(r.RxBytes)
	c.txBytes.Append(r.TxBytes)
	c.rxRate.Append(r.RxRate)
	c.txRate.Append(r.TxRate)
	c.keepalive.Append(int64(r.Keepalive))
	c.status.Append(r.Status)
	return true
}

type osdCols struct {
	columns
	meta                                     metaCols
	fsid, host, deviceClass                  *lowCard
	osd                                      *proto.ColUInt32
	up, in                                   *proto.ColBool
	commit, apply, readLat, writeLat         *proto.ColFloat64
	readOps, writeOps, readBytes, writeBytes *proto.ColFloat64
	weight                                   *proto.ColFloat64
}

func newOSDCols() columnSet {
	c := &osdCols{}
	c.meta = c.columns.meta(ms)
	c.fsid = c.lc("fsid")
	c.osd = c.u32("osd")
	c.host = c.lc("host")
	c.deviceClass = c.lc("device_class")
	c.up = c.boolean("up")
	c.in = c.boolean("in")
	c.commit = c.f64("commit_latency_ms")
	c.apply = c.f64("apply_latency_ms")
	c.readLat = c.f64("read_latency_ms")
	c.writeLat = c.f64("write_latency_ms")
	c.readOps = c.f64("read_ops")
	c.writeOps = c.f64("write_ops")
	c.readBytes = c.f64("read_bytes")
	c.writeBytes = c.f64("write_bytes")
	c.weight = c.f64("weight")
	return c
}

func (c *osdCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.OSDStat)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.fsid.Append(r.FSID)
	c.osd.Append(r.OSD)
	c.host.Append(r.Host)
	c.deviceClass.Append(r.DeviceClass)
	c.up.Append(r.Up)
	c.in.Append(r.In)
	c.commit.Append(r.CommitLatencyMs)
	c.apply.Append(r.ApplyLatencyMs)
	c.readLat.Append(r.ReadLatencyMs)
	c.writeLat.Append(r.WriteLatencyMs)
	c.readOps.Append(r.ReadOps)
	c.writeOps.Append(r.WriteOps)
	c.readBytes.Append(r.ReadBytes)
	c.writeBytes.Append(r.WriteBytes)
	c.weight.Append(r.Weight)
	return true
}

type healthCols struct {
	columns
	meta          metaCols
	fsid, status  *lowCard
	checks, flags *proto.ColArr[string]
	total, up, in *proto.ColUInt32
}

func newHealthCols() columnSet {
	c := &healthCols{}
	c.meta = c.columns.meta(ms)
	c.fsid = c.lc("fsid")
	c.status = c.lc("status")
	c.checks = c.lcArr("checks")
	c.total = c.u32("osds_total")
	c.up = c.u32("osds_up")
	c.in = c.u32("osds_in")
	c.flags = c.lcArr("flags")
	return c
}

func (c *healthCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.CephHealth)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.fsid.Append(r.FSID)
	c.status.Append(r.Status)
	c.checks.Append(r.Checks)
	c.total.Append(r.OSDsTotal)
	c.up.Append(r.OSDsUp)
	c.in.Append(r.OSDsIn)
	c.flags.Append(r.Flags)
	return true
}

type poolCols struct {
	columns
	meta                                     metaCols
	fsid, pool                               *lowCard
	poolID                                   *proto.ColUInt32
	readOps, writeOps, readBytes, writeBytes *proto.ColFloat64
	stored                                   *proto.ColUInt64
}

func newPoolCols() columnSet {
	c := &poolCols{}
	c.meta = c.columns.meta(ms)
	c.fsid = c.lc("fsid")
	c.pool = c.lc("pool")
	c.poolID = c.u32("pool_id")
	c.readOps = c.f64("read_ops")
	c.writeOps = c.f64("write_ops")
	c.readBytes = c.f64("read_bytes")
	c.writeBytes = c.f64("write_bytes")
	c.stored = c.u64("stored_bytes")
	return c
}

func (c *poolCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.CephPool)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.fsid.Append(r.FSID)
	c.pool.Append(r.Pool)
	c.poolID.Append(r.PoolID)
	c.readOps.Append(r.ReadOps)
	c.writeOps.Append(r.WriteOps)
	c.readBytes.Append(r.ReadBytes)
	c.writeBytes.Append(r.WriteBytes)
	c.stored.Append(r.StoredBytes)
	return true
}

// endpointCols are a flow endpoint's columns, prefixed src_ or dst_.
type endpointCols struct {
	namespace, pod, workload, kind *lowCard
	identity                       *proto.ColUInt32
	ip                             *proto.ColIPv6
	labels                         *proto.ColArr[string]
}

func (c *columns) endpoint(prefix string) endpointCols {
	return endpointCols{
		namespace: c.lc(prefix + "namespace"), pod: c.lc(prefix + "pod"),
		workload: c.lc(prefix + "workload"), kind: c.lc(prefix + "workload_kind"),
		identity: c.u32(prefix + "identity"), ip: c.ip(prefix + "ip"), labels: c.lcArr(prefix + "labels"),
	}
}

func (e endpointCols) add(x *pipeline.Endpoint) {
	e.namespace.Append(x.Namespace)
	e.pod.Append(x.Pod)
	e.workload.Append(x.Workload)
	e.kind.Append(x.WorkloadKind)
	e.identity.Append(x.Identity)
	e.ip.Append(ip6(x.IP))
	e.labels.Append(x.Labels)
}

type flowCols struct {
	columns
	meta                                                   metaCols
	src, dst                                               endpointCols
	l4, verdict, dropReason, direction, l7Type, httpMethod *lowCard
	srcPort, dstPort, httpCode, dnsRcode                   *proto.ColUInt16
	isReply                                                *proto.ColBool
	httpPath, dnsQuery                                     *proto.ColStr
	l7Latency                                              *proto.ColInt64
}

func newFlowCols() columnSet {
	c := &flowCols{}
	c.meta = c.columns.meta(ns)
	c.src = c.endpoint("src_")
	c.dst = c.endpoint("dst_")
	c.l4 = c.lc("l4_protocol")
	c.srcPort = c.u16("src_port")
	c.dstPort = c.u16("dst_port")
	c.verdict = c.lc("verdict")
	c.dropReason = c.lc("drop_reason")
	c.direction = c.lc("direction")
	c.isReply = c.boolean("is_reply")
	c.l7Type = c.lc("l7_type")
	c.httpMethod = c.lc("http_method")
	c.httpCode = c.u16("http_code")
	c.httpPath = c.str("http_path")
	c.l7Latency = c.i64("l7_latency")
	c.dnsQuery = c.str("dns_query")
	c.dnsRcode = c.u16("dns_rcode")
	return c
}

func (c *flowCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.Flow)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.src.add(&r.Source)
	c.dst.add(&r.Destination)
	c.l4.Append(r.L4Protocol)
	c.srcPort.Append(r.SourcePort)
	c.dstPort.Append(r.DestinationPort)
	c.verdict.Append(r.Verdict)
	c.dropReason.Append(r.DropReason)
	c.direction.Append(r.Direction)
	c.isReply.Append(r.IsReply)
	c.l7Type.Append(r.L7Type)
	c.httpMethod.Append(r.HTTPMethod)
	c.httpCode.Append(r.HTTPCode)
	c.httpPath.Append(r.HTTPPath)
	c.l7Latency.Append(int64(r.L7Latency))
	c.dnsQuery.Append(r.DNSQuery)
	c.dnsRcode.Append(r.DNSRcode)
	return true
}

type edgeCols struct {
	columns
	meta                                 metaCols
	interval, p50, p90, p99              *proto.ColInt64
	srcNS, srcWL, dstNS, dstWL, protocol *lowCard
	port                                 *proto.ColUInt16
	flows, sampled, drops                *proto.ColUInt64
	requests, errors                     *proto.ColUInt64
	dropReasons                          *proto.ColMap[string, uint64]
}

func newEdgeCols() columnSet {
	c := &edgeCols{}
	c.meta = c.columns.meta(ms)
	c.interval = c.i64("interval")
	c.srcNS = c.lc("src_namespace")
	c.srcWL = c.lc("src_workload")
	c.dstNS = c.lc("dst_namespace")
	c.dstWL = c.lc("dst_workload")
	c.protocol = c.lc("protocol")
	c.port = c.u16("port")
	c.flows = c.u64("flows")
	c.sampled = c.u64("sampled")
	c.drops = c.u64("drops")
	c.dropReasons = c.strMap("drop_reasons")
	c.requests = c.u64("requests")
	c.errors = c.u64("errors")
	c.p50 = c.i64("latency_p50")
	c.p90 = c.i64("latency_p90")
	c.p99 = c.i64("latency_p99")
	return c
}

func (c *edgeCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.FlowEdge)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.interval.Append(int64(r.Interval))
	c.srcNS.Append(r.SourceNamespace)
	c.srcWL.Append(r.SourceWorkload)
	c.dstNS.Append(r.DestNamespace)
	c.dstWL.Append(r.DestWorkload)
	c.protocol.Append(r.Protocol)
	c.port.Append(r.Port)
	c.flows.Append(r.Flows)
	c.sampled.Append(r.Sampled)
	c.drops.Append(r.Drops)
	c.dropReasons.Append(r.DropReasons)
	c.requests.Append(r.Requests)
	c.errors.Append(r.Errors)
	c.p50.Append(int64(r.LatencyP50))
	c.p90.Append(int64(r.LatencyP90))
	c.p99.Append(int64(r.LatencyP99))
	return true
}

type probeCols struct {
	columns
	meta                                                       metaCols
	vantage, method, pop, service, clientRegion, target, rcode *lowCard
	answer, errText                                            *proto.ColStr
	success                                                    *proto.ColBool
	rtt                                                        *proto.ColInt64
}

func newProbeCols() columnSet {
	c := &probeCols{}
	c.meta = c.columns.meta(ms)
	c.vantage = c.lc("vantage")
	c.method = c.lc("method")
	c.pop = c.lc("pop")
	c.service = c.lc("service")
	c.clientRegion = c.lc("client_region")
	c.target = c.lc("target")
	c.answer = c.str("answer")
	c.rcode = c.lc("rcode")
	c.success = c.boolean("success")
	c.rtt = c.i64("rtt")
	c.errText = c.str("error")
	return c
}

func (c *probeCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.Probe)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.vantage.Append(r.Vantage)
	c.method.Append(r.Method)
	c.pop.Append(r.POP)
	c.service.Append(r.Service)
	c.clientRegion.Append(r.ClientRegion)
	c.target.Append(r.Target)
	c.answer.Append(r.Answer)
	c.rcode.Append(r.Rcode)
	c.success.Append(r.Success)
	c.rtt.Append(int64(r.RTT))
	c.errText.Append(r.Error)
	return true
}

type steeringCols struct {
	columns
	meta                              metaCols
	service, clientRegion, pop, cause *lowCard
	oldWeight, newWeight, regret      *proto.ColFloat64
	reason                            *proto.ColStr
	utilisation, headroom             *proto.ColFloat64
}

func newSteeringCols() columnSet {
	c := &steeringCols{}
	c.meta = c.columns.meta(ms)
	c.service = c.lc("service")
	c.clientRegion = c.lc("client_region")
	c.pop = c.lc("pop")
	c.oldWeight = c.f64("old_weight")
	c.newWeight = c.f64("new_weight")
	c.cause = c.lc("cause")
	c.reason = c.str("reason")
	c.regret = c.f64("regret_ms")
	c.utilisation = c.f64("utilisation")
	c.headroom = c.f64("headroom")
	return c
}

func (c *steeringCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.SteeringDecision)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.service.Append(r.Service)
	c.clientRegion.Append(r.ClientRegion)
	c.pop.Append(r.POP)
	c.oldWeight.Append(r.OldWeight)
	c.newWeight.Append(r.NewWeight)
	c.cause.Append(r.Cause)
	c.reason.Append(r.Reason)
	c.regret.Append(r.RegretMs)
	c.utilisation.Append(r.Utilisation)
	c.headroom.Append(r.Headroom)
	return true
}

// inputsCols holds one steering tick per row; its cells, alerts and overrides are
// parallel arrays (ClickHouse's Nested layout, written as plain arrays).
type inputsCols struct {
	columns
	meta                                  metaCols
	started                               *proto.ColDateTime64
	keyframe, alertsChanged, ovChanged    *proto.ColBool
	cellVantage, cellPOP                  *proto.ColArr[string]
	cellRTT                               *proto.ColArr[int64]
	cellFailures                          *proto.ColArr[uint32]
	cellLastSeen, cellLastOK, alertActive *proto.ColArr[time.Time]
	alertName, alertSeverity              *proto.ColArr[string]
	alertLabels                           *proto.ColArr[map[string]string]
	ovAction, ovPOP, ovService, ovRegion  *proto.ColArr[string]
	ovSource                              *proto.ColArr[string]
	loadPOP                               *proto.ColArr[string]
	loadRate                              *proto.ColArr[float64]
	loadSeen                              *proto.ColArr[time.Time]

	// scratch rows, reused between records
	vantages, pops, names, sevs, acts, opops, svcs, regs, srcs []string
	rtts                                                       []int64
	fails                                                      []uint32
	seen, ok, active                                           []time.Time
	labels                                                     []map[string]string
	lpops                                                      []string
	rates                                                      []float64
	lseen                                                      []time.Time
}

func (c *columns) timeArr(name string) *proto.ColArr[time.Time] {
	return addCol(c, name, proto.NewArray[time.Time](new(proto.ColDateTime64).WithPrecision(ns).WithLocation(time.UTC)))
}

func newInputsCols() columnSet {
	c := &inputsCols{}
	c.meta = c.columns.meta(ns)
	c.started = c.time("started", ns)
	c.keyframe = c.boolean("keyframe")
	c.cellVantage = c.lcArr("cell_vantage")
	c.cellPOP = c.lcArr("cell_pop")
	c.cellRTT = addCol(&c.columns, "cell_rtt", proto.NewArray[int64](new(proto.ColInt64)))
	c.cellFailures = addCol(&c.columns, "cell_failures", proto.NewArray[uint32](new(proto.ColUInt32)))
	c.cellLastSeen = c.timeArr("cell_last_seen")
	c.cellLastOK = c.timeArr("cell_last_ok")
	c.alertsChanged = c.boolean("alerts_changed")
	c.alertName = addCol(&c.columns, "alert_name", proto.NewArray[string](new(proto.ColStr)))
	c.alertSeverity = c.lcArr("alert_severity")
	c.alertLabels = addCol(&c.columns, "alert_labels", proto.NewArray[map[string]string](proto.NewMap[string, string](new(proto.ColStr), new(proto.ColStr))))
	c.alertActive = c.timeArr("alert_active_at")
	c.ovChanged = c.boolean("overrides_changed")
	c.ovAction = c.lcArr("override_action")
	c.ovPOP = c.lcArr("override_pop")
	c.ovService = c.lcArr("override_service")
	c.ovRegion = c.lcArr("override_region")
	c.ovSource = c.lcArr("override_source")
	c.loadPOP = c.lcArr("load_pop")
	c.loadRate = addCol(&c.columns, "load_rate", proto.NewArray[float64](new(proto.ColFloat64)))
	c.loadSeen = c.timeArr("load_seen")
	return c
}

func (c *inputsCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.SteeringInputs)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.started.Append(r.Started)
	c.keyframe.Append(r.Keyframe)
	c.vantages, c.pops, c.rtts, c.fails, c.seen, c.ok = c.vantages[:0], c.pops[:0], c.rtts[:0], c.fails[:0], c.seen[:0], c.ok[:0]
	for _, x := range r.Cells {
		c.vantages, c.pops = append(c.vantages, x.Vantage), append(c.pops, x.POP)
		c.rtts, c.fails = append(c.rtts, int64(x.RTT)), append(c.fails, uint32(max(x.Failures, 0)))
		c.seen, c.ok = append(c.seen, x.LastSeen), append(c.ok, x.LastOK)
	}
	c.cellVantage.Append(c.vantages)
	c.cellPOP.Append(c.pops)
	c.cellRTT.Append(c.rtts)
	c.cellFailures.Append(c.fails)
	c.cellLastSeen.Append(c.seen)
	c.cellLastOK.Append(c.ok)
	c.alertsChanged.Append(r.AlertsChanged)
	c.names, c.sevs, c.labels, c.active = c.names[:0], c.sevs[:0], c.labels[:0], c.active[:0]
	for _, a := range r.Alerts {
		c.names, c.sevs = append(c.names, a.Name), append(c.sevs, a.Severity)
		c.labels, c.active = append(c.labels, a.Labels), append(c.active, a.ActiveAt)
	}
	c.alertName.Append(c.names)
	c.alertSeverity.Append(c.sevs)
	c.alertLabels.Append(c.labels)
	c.alertActive.Append(c.active)
	c.ovChanged.Append(r.OverridesChanged)
	c.acts, c.opops, c.svcs, c.regs, c.srcs = c.acts[:0], c.opops[:0], c.svcs[:0], c.regs[:0], c.srcs[:0]
	for _, o := range r.Overrides {
		c.acts, c.opops, c.svcs = append(c.acts, o.Action), append(c.opops, o.POP), append(c.svcs, o.Service)
		c.regs, c.srcs = append(c.regs, o.Region), append(c.srcs, o.Source)
	}
	c.ovAction.Append(c.acts)
	c.ovPOP.Append(c.opops)
	c.ovService.Append(c.svcs)
	c.ovRegion.Append(c.regs)
	c.ovSource.Append(c.srcs)
	c.lpops, c.rates, c.lseen = c.lpops[:0], c.rates[:0], c.lseen[:0]
	for _, l := range r.Loads {
		c.lpops, c.rates, c.lseen = append(c.lpops, l.POP), append(c.rates, l.Rate), append(c.lseen, l.Seen)
	}
	c.loadPOP.Append(c.lpops)
	c.loadRate.Append(c.rates)
	c.loadSeen.Append(c.lseen)
	return true
}

type haproxyCols struct {
	columns
	meta                                             metaCols
	pop, proxy, server, typ, status, checkStatus     *lowCard
	sessions, sessionMax, queue                      *proto.ColUInt64
	sessionRate, bytesIn, bytesOut, h4xx, h5xx, resp *proto.ColFloat64
	utilisation                                      *proto.ColFloat64
}

func newHAProxyCols() columnSet {
	c := &haproxyCols{}
	c.meta = c.columns.meta(ms)
	c.pop = c.lc("pop")
	c.proxy = c.lc("proxy")
	c.server = c.lc("server")
	c.typ = c.lc("type")
	c.status = c.lc("status")
	c.checkStatus = c.lc("check_status")
	c.sessions = c.u64("sessions")
	c.sessionMax = c.u64("session_max")
	c.sessionRate = c.f64("session_rate")
	c.bytesIn = c.f64("bytes_in")
	c.bytesOut = c.f64("bytes_out")
	c.queue = c.u64("queue")
	c.h4xx = c.f64("http_4xx")
	c.h5xx = c.f64("http_5xx")
	c.resp = c.f64("response_ms")
	c.utilisation = c.f64("utilisation")
	return c
}

func (c *haproxyCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.HAProxyStat)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.pop.Append(r.POP)
	c.proxy.Append(r.Proxy)
	c.server.Append(r.Server)
	c.typ.Append(r.Type)
	c.status.Append(r.Status)
	c.checkStatus.Append(r.CheckStatus)
	c.sessions.Append(r.Sessions)
	c.sessionMax.Append(r.SessionMax)
	c.sessionRate.Append(r.SessionRate)
	c.bytesIn.Append(r.BytesIn)
	c.bytesOut.Append(r.BytesOut)
	c.queue.Append(r.Queue)
	c.h4xx.Append(r.HTTP4xx)
	c.h5xx.Append(r.HTTP5xx)
	c.resp.Append(r.ResponseMs)
	c.utilisation.Append(r.Utilisation)
	return true
}

type vrrpStateCols struct {
	columns
	meta                 metaCols
	pop, instance, state *lowCard
	priority             *proto.ColUInt32
	vips                 *proto.ColArr[string]
	holdsVIP             *proto.ColBool
	since                *proto.ColDateTime64
}

func newVRRPStateCols() columnSet {
	c := &vrrpStateCols{}
	c.meta = c.columns.meta(ms)
	c.pop = c.lc("pop")
	c.instance = c.lc("instance")
	c.state = c.lc("state")
	c.priority = c.u32("priority")
	c.vips = c.lcArr("vips")
	c.holdsVIP = c.boolean("holds_vip")
	c.since = c.time("since", ms)
	return c
}

func (c *vrrpStateCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.VRRPState)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.pop.Append(r.POP)
	c.instance.Append(r.Instance)
	c.state.Append(r.State)
	c.priority.Append(r.Priority)
	c.vips.Append(r.VIPs)
	c.holdsVIP.Append(r.HoldsVIP)
	c.since.Append(ts(r.Since))
	return true
}

type vrrpTransitionCols struct {
	columns
	meta                                metaCols
	pop, instance, from, to, prevMaster *lowCard
	priority                            *proto.ColUInt32
	failover                            *proto.ColBool
	duration                            *proto.ColInt64
}

func newVRRPTransitionCols() columnSet {
	c := &vrrpTransitionCols{}
	c.meta = c.columns.meta(ms)
	c.pop = c.lc("pop")
	c.instance = c.lc("instance")
	c.from = c.lc("from_state")
	c.to = c.lc("to_state")
	c.priority = c.u32("priority")
	c.failover = c.boolean("failover")
	c.prevMaster = c.lc("previous_master")
	c.duration = c.i64("duration")
	return c
}

func (c *vrrpTransitionCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.VRRPTransition)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.pop.Append(r.POP)
	c.instance.Append(r.Instance)
	c.from.Append(r.From)
	c.to.Append(r.To)
	c.priority.Append(r.Priority)
	c.failover.Append(r.Failover)
	c.prevMaster.Append(r.PreviousMaster)
	c.duration.Append(int64(r.Duration))
	return true
}

type alertCols struct {
	columns
	meta            metaCols
	name            *proto.ColStr
	severity, state *lowCard
	labels          *proto.ColMap[string, string]
	activeAt        *proto.ColDateTime64
	keyframe        *proto.ColBool
}

func newAlertCols() columnSet {
	c := &alertCols{}
	c.meta = c.columns.meta(ms)
	c.name = c.str("name")
	c.severity = c.lc("severity")
	c.labels = addCol(&c.columns, "labels", proto.NewMap[string, string](newLowCard(), new(proto.ColStr)))
	c.state = c.lc("state")
	c.activeAt = c.time("active_at", ms)
	c.keyframe = c.boolean("keyframe")
	return c
}

func (c *alertCols) add(rec pipeline.Record) bool {
	r, ok := rec.(*pipeline.AlertState)
	if !ok {
		return false
	}
	c.meta.add(&r.M)
	c.name.Append(r.Name)
	c.severity.Append(r.Severity)
	c.labels.Append(r.Labels)
	c.state.Append(r.State)
	c.activeAt.Append(ts(r.ActiveAt))
	c.keyframe.Append(r.Keyframe)
	return true
}
