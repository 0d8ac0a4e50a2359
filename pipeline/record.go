// Package pipeline owns Meridian's record types and moves records from collectors to
// storage and to the live consumers (map, SLI series, steering).
package pipeline

import (
	"net/netip"
	"time"
)

// Kind names a record type; each kind has one ClickHouse table.
type Kind uint8

const (
	KindTunnelStat Kind = iota + 1
	KindOSDStat
	KindCephHealth
	KindCephPool
	KindFlow
	KindFlowEdge
	KindProbe
	KindSteeringDecision
	KindSteeringInputs
	KindHAProxyStat
	KindVRRPState
	KindVRRPTransition
	KindAlertState
)

// Kinds lists every record kind, in a stable order.
var Kinds = []Kind{KindTunnelStat, KindOSDStat, KindCephHealth, KindCephPool, KindFlow, KindFlowEdge, KindProbe, KindSteeringDecision, KindSteeringInputs, KindHAProxyStat, KindVRRPState, KindVRRPTransition, KindAlertState}

var kindNames = map[Kind]string{
	KindTunnelStat:       "tunnel_stat",
	KindOSDStat:          "osd_stat",
	KindCephHealth:       "ceph_health",
	KindCephPool:         "ceph_pool",
	KindFlow:             "flow",
	KindFlowEdge:         "flow_edge",
	KindProbe:            "probe",
	KindSteeringDecision: "steering_decision",
	KindSteeringInputs:   "steering_inputs",
	KindHAProxyStat:      "haproxy_stat",
	KindVRRPState:        "vrrp_state",
	KindVRRPTransition:   "vrrp_transition",
	KindAlertState:       "alert_state",
}

// String is the kind's snake_case name, used in metric labels, spool files and logs.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "unknown"
}

// Record is any observation that flows through the pipeline.
type Record interface {
	Kind() Kind
	Meta() *Meta
}

// Meta is what every record carries so that every layer can be joined to the map:
// when it was observed, which collector saw it, and the inventory identity it maps to.
// Empty identity fields mean "not mapped to the inventory".
type Meta struct {
	Time      time.Time // observation time
	Collector string    // collector instance, e.g. "wireguard/nyc-destroyer-1"
	Site      string
	Cluster   string
	Node      string
}

// Statuses shared by tunnels, OSDs, POPs and map elements.
const (
	StatusOK       = "ok"
	StatusDegraded = "degraded"
	StatusDown     = "down"
	StatusUnknown  = "unknown"
)

// TunnelStat is one WireGuard peer as seen from one interface. Meta.Node is the local node.
type TunnelStat struct {
	M             Meta
	Interface     string
	PublicKey     string // peer public key, base64
	PeerNode      string // inventory node owning PublicKey; "" when unknown
	PeerSite      string
	Endpoint      string // host:port, "" when none
	AllowedIPs    []netip.Prefix
	LastHandshake time.Time // zero: never
	RxBytes       uint64
	TxBytes       uint64
	RxRate        float64 // bytes/s since the previous sample; 0 on the first sample or a counter reset
	TxRate        float64
	Keepalive     time.Duration // persistent keepalive, 0 when off
	Status        string        // StatusOK (up), StatusDegraded (stale), StatusDown, StatusUnknown
}

// OSDStat is one Ceph OSD. Meta.Node is the OSD's host mapped to the inventory.
type OSDStat struct {
	M               Meta
	FSID            string
	OSD             uint32
	Host            string // Ceph's host name, as in ceph_osd_metadata
	DeviceClass     string
	Up              bool
	In              bool
	CommitLatencyMs float64
	ApplyLatencyMs  float64
	ReadLatencyMs   float64 // from _sum/_count deltas over the scrape interval; 0 = unknown (no op completed, first scrape, CLI source)
	WriteLatencyMs  float64
	ReadOps         float64 // ops/s
	WriteOps        float64
	ReadBytes       float64 // bytes/s
	WriteBytes      float64
	Weight          float64 // override reweight from `ceph osd dump` (0 = out, 1 = full); 0 when the source does not give it
}

// CephHealth is one Ceph cluster's overall state.
type CephHealth struct {
	M         Meta
	FSID      string
	Status    string   // HEALTH_OK, HEALTH_WARN, HEALTH_ERR
	Checks    []string // active health check names, e.g. OSD_DOWN
	OSDsTotal uint32
	OSDsUp    uint32
	OSDsIn    uint32
	Flags     []string // OSD map flags from `ceph osd dump`, e.g. noout; empty when the source does not give them
}

// CephPool is one pool's client I/O.
type CephPool struct {
	M           Meta
	FSID        string
	Pool        string
	PoolID      uint32
	ReadOps     float64 // ops/s
	WriteOps    float64
	ReadBytes   float64 // bytes/s
	WriteBytes  float64
	StoredBytes uint64
}

// Endpoint is one side of a Hubble flow.
type Endpoint struct {
	Namespace    string
	Pod          string
	Workload     string
	WorkloadKind string
	Identity     uint32
	IP           netip.Addr
	Labels       []string // selected labels, "key=value"
	Cluster      string   // Cilium's cluster name (cluster_name, else the io.cilium.k8s.policy.cluster label); "" unknown
}

// Flow is one Hubble flow. Meta.Cluster and Meta.Node are where Hubble saw it.
type Flow struct {
	M               Meta
	Source          Endpoint
	Destination     Endpoint
	L4Protocol      string // TCP, UDP, ICMPv4, ICMPv6, SCTP, ""
	SourcePort      uint16
	DestinationPort uint16
	Verdict         string // FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED
	DropReason      string // e.g. POLICY_DENIED; "" unless dropped
	Direction       string // INGRESS, EGRESS, UNKNOWN
	IsReply         bool
	L7Type          string // HTTP, DNS, KAFKA, ""
	HTTPMethod      string
	HTTPCode        uint16
	HTTPPath        string
	L7Latency       time.Duration
	DNSQuery        string
	DNSRcode        uint16
}

// FlowEdge aggregates flows between two workloads over one interval (Meta.Time is its start).
type FlowEdge struct {
	M               Meta
	Interval        time.Duration
	SourceNamespace string
	SourceWorkload  string
	DestNamespace   string
	DestWorkload    string
	DestCluster     string // the destination's cluster when it is not Meta.Cluster (a cross-cluster flow); "" same cluster
	SourceCluster   string // the source's cluster when it is not Meta.Cluster (the server's relay's view of a cross-cluster flow); "" same cluster
	Protocol        string
	Port            uint16
	Flows           uint64
	Sampled         uint64 // of Flows, those whose raw Flow record was not stored (sampling, lost events)
	Drops           uint64
	DropReasons     map[string]uint64
	Requests        uint64 // L7 requests (HTTP requests, DNS queries)
	Errors          uint64 // HTTP 5xx, DNS rcode != 0
	LatencyP50      time.Duration
	LatencyP90      time.Duration
	LatencyP99      time.Duration
}

// Probe is one round-trip measurement from a vantage to a POP. Meta.Site is the vantage's site.
type Probe struct {
	M            Meta
	Vantage      string
	Method       string // dns, tcp, http, icmp
	POP          string // target POP; for DNS, the POP the answer maps to ("" when unmapped)
	Service      string
	ClientRegion string // DNS probes: the client region whose subnet was sent
	Target       string // address, URL or DNS name probed
	Answer       string // DNS answer address(es) or HTTP status
	Rcode        string // DNS rcode name
	Success      bool
	RTT          time.Duration
	Error        string
}

// SteeringDecision is one weight change with its reason.
type SteeringDecision struct {
	M            Meta
	Service      string
	ClientRegion string
	POP          string
	OldWeight    float64
	NewWeight    float64
	Cause        string // health, slo, rtt, override, failopen, restore, capacity
	Reason       string // human-readable explanation
	// RegretMs is the region's regret once this change applied: the RTT to the POPs it
	// is answered with (weighted) minus the RTT to the best healthy POP its residency
	// allows, in milliseconds, from the region's vantage; 0 without a vantage.
	RegretMs float64
	// Utilisation is the POP's measured load over its inventory capacity as the tick
	// read it; -1 when unknown (no capacity, or no load measured within shed.stale).
	Utilisation float64
	// Headroom is the POP's capacity × the high watermark minus its measured load, in
	// sessions per second (negative above the watermark); 0 when unknown.
	Headroom float64
}

// SteeringInputs is what the steering engine read on one tick, recorded so that the tick
// can be replayed exactly (steering.Replay). Meta.Time is the tick's clock. To stay small
// it carries changes: the cells that differ from the previous tick's, and the alerts and
// overrides only when they changed; a keyframe carries everything.
type SteeringInputs struct {
	M       Meta
	Started time.Time // the engine's start: a new value means a new engine, with empty state
	// Keyframe: Cells, Alerts and Overrides are complete (the engine's first tick, then
	// one a minute), so a replay may start here.
	Keyframe         bool
	Cells            []SteeringCell
	AlertsChanged    bool // Alerts is the new firing set (possibly empty)
	Alerts           []SteeringAlert
	OverridesChanged bool // Overrides is the new set in force (possibly empty)
	Overrides        []SteeringOverride
	Loads            []SteeringLoad // the POPs whose measured load changed; every one on a keyframe
}

// SteeringLoad is one POP's measured load as steering read it (steering.POPLoad).
type SteeringLoad struct {
	POP  string
	Rate float64   // new sessions per second, the unit of the POP's inventory capacity
	Seen time.Time // when it was measured
}

// SteeringCell is one vantage's view of one POP as steering read it (geodns.Cell).
type SteeringCell struct {
	Vantage, POP     string
	RTT              time.Duration // smoothed; 0 when never measured
	Failures         int           // longest run of consecutive failures among the methods
	LastSeen, LastOK time.Time
}

// SteeringAlert is one firing SLO alert as steering read it.
type SteeringAlert struct {
	Name, Severity string
	Labels         map[string]string
	ActiveAt       time.Time
}

// SteeringOverride is one manual drain or pin in force.
type SteeringOverride struct {
	Action, POP, Service, Region, Source string
}

// HAProxyStat is one HAProxy frontend, backend or server of a POP's front door, over
// one scrape interval. Meta.Site is the POP's site, Meta.Node the HAProxy node.
type HAProxyStat struct {
	M           Meta
	POP         string
	Proxy       string  // frontend or backend name
	Server      string  // server name; "" for a frontend or backend
	Type        string  // frontend, backend, server
	Status      string  // HAProxy's: OPEN, UP, DOWN, MAINT, NOLB, DRAIN, ...
	CheckStatus string  // servers with checks: L4OK, L7OK, L4CON, L7STS, ...; "" otherwise
	Sessions    uint64  // current
	SessionMax  uint64  // configured limit (maxconn); 0 when none
	SessionRate float64 // new sessions/s over the interval; 0 on the first sample or a counter reset
	BytesIn     float64 // bytes/s
	BytesOut    float64
	Queue       uint64  // requests waiting for a server (backends and servers)
	HTTP4xx     float64 // responses/s
	HTTP5xx     float64
	// ResponseMs is HAProxy's average response time over its last 1024 requests
	// (backends and servers); 0 when it has none.
	ResponseMs float64
	// Utilisation is this frontend's load against its POP's capacity (inventory
	// pops[].capacity): the larger of session rate / capacity.sessions_per_second and bytes out /
	// capacity.bandwidth; a POP's utilisation is the sum over its nodes. 0 without a capacity.
	Utilisation float64
}

// VRRP states as Keepalived names them; VRRPUnknown when the daemon is gone.
const (
	VRRPMaster  = "MASTER"
	VRRPBackup  = "BACKUP"
	VRRPFault   = "FAULT"
	VRRPStop    = "STOP"
	VRRPUnknown = "UNKNOWN"
)

// VRRPState is one Keepalived VRRP instance on one node, sampled each interval.
// Meta.Site is the POP's site, Meta.Node the Keepalived node.
type VRRPState struct {
	M        Meta
	POP      string
	Instance string // vrrp_instance name
	State    string // VRRPMaster, VRRPBackup, VRRPFault, VRRPStop, VRRPUnknown
	Priority uint32
	VIPs     []string // the instance's virtual addresses
	HoldsVIP bool     // this node is the instance's MASTER, so it answers on VIPs
	Since    time.Time
}

// VRRPTransition is one state change of one instance on one node. A transition to
// MASTER that ends a time without any master for the instance is a failover: it names
// the previous master and how long the VIP had no holder (from the previous master
// leaving MASTER, or its daemon going away, to this node becoming MASTER).
type VRRPTransition struct {
	M              Meta
	POP            string
	Instance       string
	From, To       string
	Priority       uint32
	Failover       bool
	PreviousMaster string
	Duration       time.Duration
}

// AlertState is one alert starting to fire or resolving, as the ruler saw it, so that a
// past state of the map shows the alerts firing then. A still-firing alert is restated
// (Keyframe) every alerts.KeyframeEvery, so the alerts firing at any instant are found
// among the rows of a bounded window before it.
type AlertState struct {
	M        Meta
	Name     string
	Severity string // page, ticket, or "" for alerts outside the SLO scheme
	Labels   map[string]string
	State    string // AlertFiring or AlertResolved
	ActiveAt time.Time
	Keyframe bool // a restatement of a firing alert, not a change
}

// States of an AlertState.
const (
	AlertFiring   = "firing"
	AlertResolved = "resolved"
)

func (r *TunnelStat) Kind() Kind       { return KindTunnelStat }
func (r *HAProxyStat) Kind() Kind      { return KindHAProxyStat }
func (r *VRRPState) Kind() Kind        { return KindVRRPState }
func (r *VRRPTransition) Kind() Kind   { return KindVRRPTransition }
func (r *HAProxyStat) Meta() *Meta     { return &r.M }
func (r *VRRPState) Meta() *Meta       { return &r.M }
func (r *VRRPTransition) Meta() *Meta  { return &r.M }
func (r *OSDStat) Kind() Kind          { return KindOSDStat }
func (r *CephHealth) Kind() Kind       { return KindCephHealth }
func (r *CephPool) Kind() Kind         { return KindCephPool }
func (r *Flow) Kind() Kind             { return KindFlow }
func (r *FlowEdge) Kind() Kind         { return KindFlowEdge }
func (r *Probe) Kind() Kind            { return KindProbe }
func (r *SteeringDecision) Kind() Kind { return KindSteeringDecision }
func (r *SteeringInputs) Kind() Kind   { return KindSteeringInputs }
func (r *AlertState) Kind() Kind       { return KindAlertState }

func (r *TunnelStat) Meta() *Meta       { return &r.M }
func (r *OSDStat) Meta() *Meta          { return &r.M }
func (r *CephHealth) Meta() *Meta       { return &r.M }
func (r *CephPool) Meta() *Meta         { return &r.M }
func (r *Flow) Meta() *Meta             { return &r.M }
func (r *FlowEdge) Meta() *Meta         { return &r.M }
func (r *Probe) Meta() *Meta            { return &r.M }
func (r *SteeringDecision) Meta() *Meta { return &r.M }
func (r *SteeringInputs) Meta() *Meta   { return &r.M }
func (r *AlertState) Meta() *Meta       { return &r.M }
