package topomap

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// apply folds one record into the graph. Records of kinds the map does not draw
// (raw flows, pools) are ignored: FlowEdge and OSDStat carry what the map shows.
func (g *graph) apply(r pipeline.Record, now time.Time) {
	switch r := r.(type) {
	case *pipeline.TunnelStat:
		g.applyTunnel(r, now)
	case *pipeline.OSDStat:
		g.applyOSD(r, now)
	case *pipeline.CephHealth:
		g.applyCephHealth(r, now)
	case *pipeline.FlowEdge:
		g.applyFlowEdge(r, now)
	case *pipeline.Probe:
		g.applyProbe(r, now)
	case *pipeline.SteeringDecision:
		g.applySteering(r, now)
	case *pipeline.HAProxyStat:
		g.applyHAProxy(r, now)
	case *pipeline.VRRPState:
		g.applyVRRP(r.POP, r.M.Node, r.Instance, r.State, r.M.Time, now)
	case *pipeline.VRRPTransition: // the holder changes on the map at once, not at the next state
		g.applyVRRP(r.POP, r.M.Node, r.Instance, r.To, r.M.Time, now)
	}
}

// observeNode records that ns was seen. Clients get the node again only when that can
// change what they show (first sight, back from stale); callers that changed its metrics
// mark it themselves.
func (g *graph) observeNode(ns *nodeState, now time.Time, at time.Time) {
	if ns.seen.IsZero() || ns.stale {
		g.markNode(ns.n.ID) // its freshness may change its status
	}
	ns.seen = now
	ns.stale = false
	ns.n.Updated = unixMs(at, now)
}

func (g *graph) observeEdge(es *edgeState, status string, now, at time.Time) {
	if status == "" {
		status = pipeline.StatusUnknown
	}
	es.base = status
	es.seen = now
	es.e.Updated = unixMs(at, now)
	g.markEdge(es.e.ID)
}

func unixMs(at, now time.Time) int64 {
	if at.IsZero() {
		at = now
	}
	return at.UnixMilli()
}

func metricMap(m *map[string]float64) map[string]float64 {
	if *m == nil {
		*m = map[string]float64{}
	}
	return *m
}

func attrMap(m *map[string]string) map[string]string {
	if *m == nil {
		*m = map[string]string{}
	}
	return *m
}

// ms converts a duration to milliseconds rounded to microseconds (short JSON).
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func round3(f float64) float64 { return math.Round(f*1e3) / 1e3 }

// nodeFor finds or creates the node a record names. An unmapped name still gets a node,
// with status unknown, so the map shows that something unexpected is out there.
func (g *graph) nodeFor(name, site, cluster string) *nodeState {
	ns, ok := g.nodes["node:"+name] // a key that does not escape is built on the stack
	if !ok {
		ns = g.node(nodeID(name), KindNode, site, cluster, name)
	}
	if !ns.inventory && ns.n.Site == "" && site != "" {
		ns.n.Site = site
	}
	return ns
}

func (g *graph) applyTunnel(r *pipeline.TunnelStat, now time.Time) {
	local := r.M.Node
	if local == "" {
		local = r.M.Collector
		g.unmapped["tunnel_stat"]++
	}
	ln := g.nodeFor(local, r.M.Site, r.M.Cluster)
	var pn *nodeState
	if r.PeerNode != "" {
		pn = g.nodeFor(r.PeerNode, r.PeerSite, "")
	} else {
		key := r.PublicKey
		if len(key) > 8 {
			key = key[:8]
		}
		pn = g.node(nodeID("?"+key), KindNode, r.PeerSite, "", "unknown peer "+key+"…")
		attrMap(&pn.n.Attrs)["public_key"] = r.PublicKey
		g.unmapped["tunnel_peer"]++
	}
	a, b := ln.n.ID, pn.n.ID
	if b < a {
		a, b = b, a
	}
	es, ok := g.edges["tunnel:"+a+"|"+b] // found without allocating its id, as in nodeFor
	if !ok {
		es = g.edge("tunnel:"+a+"|"+b, KindTunnel, a, b)
	}
	st := r.Status
	if st == "" {
		st = pipeline.StatusUnknown
	}
	side := 0 // the edge's ends are its two nodes: a report comes from one of them
	if ln.n.ID != a {
		side = 1
	}
	es.sides[side] = tunnelSide{status: st, rx: r.RxRate, tx: r.TxRate, bps: r.RxRate + r.TxRate, seen: now}
	// Both ends report the same tunnel: it is as bad as the worse fresh report, and its
	// throughput is the busier side's.
	status, best := pipeline.StatusUnknown, tunnelSide{}
	for _, s := range es.sides {
		if s.status == "" {
			continue
		}
		status = worst(status, s.status)
		if s.bps >= best.bps {
			best = s
		}
	}
	m := metricMap(&es.e.Metrics)
	m["rx_bytes_per_s"], m["tx_bytes_per_s"] = round3(best.rx), round3(best.tx)
	if !r.LastHandshake.IsZero() {
		m["last_handshake_unix"] = float64(r.LastHandshake.Unix())
	}
	if rtt, ok := g.siteRTT[sitePair(ln.n.Site, pn.n.Site)]; ok {
		m["rtt_ms"] = rtt
	}
	at := attrMap(&es.e.Attrs)
	at["interface"], at["endpoint"] = r.Interface, r.Endpoint
	g.observeEdge(es, status, now, r.M.Time)
	g.observeNode(ln, now, r.M.Time)
	g.observeNode(pn, now, r.M.Time)
}

func sitePair(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (g *graph) applyOSD(r *pipeline.OSDStat, now time.Time) {
	host := r.M.Node
	if host == "" {
		host = r.Host
		g.unmapped["osd_stat"]++
	}
	hn := g.nodeFor(host, r.M.Site, r.M.Cluster)
	id := fmt.Sprintf("osd:%s.%d", r.FSID, r.OSD)
	if r.FSID == "" {
		id = fmt.Sprintf("osd:%s.%d", host, r.OSD)
	}
	on, fresh := g.nodes[id]
	if !fresh {
		on = g.node(id, KindOSD, hn.n.Site, hn.n.Cluster, fmt.Sprintf("osd.%d", r.OSD))
		g.adopt(on, hn.n.ID)
		on.n.Geo = hn.n.Geo
	}
	lat := max(r.CommitLatencyMs, r.ApplyLatencyMs, r.ReadLatencyMs, r.WriteLatencyMs)
	switch {
	case !r.Up:
		on.base = pipeline.StatusDown
	case !r.In || lat > ms(g.rules.OSDLatencyDegraded):
		on.base = pipeline.StatusDegraded
	default:
		on.base = pipeline.StatusOK
	}
	m := metricMap(&on.n.Metrics)
	m["commit_latency_ms"], m["apply_latency_ms"] = r.CommitLatencyMs, r.ApplyLatencyMs
	m["read_latency_ms"], m["write_latency_ms"] = round3(r.ReadLatencyMs), round3(r.WriteLatencyMs)
	m["read_ops_per_s"], m["write_ops_per_s"] = round3(r.ReadOps), round3(r.WriteOps)
	m["read_bytes_per_s"], m["write_bytes_per_s"] = round3(r.ReadBytes), round3(r.WriteBytes)
	at := attrMap(&on.n.Attrs)
	at["host"], at["device_class"], at["fsid"] = r.Host, r.DeviceClass, r.FSID
	at["up"], at["in"] = fmt.Sprint(r.Up), fmt.Sprint(r.In)
	g.markNode(id)
	g.observeNode(on, now, r.M.Time)
	es := g.edge("storage:"+hn.n.ID+"->"+id, KindStorage, hn.n.ID, id)
	em := metricMap(&es.e.Metrics)
	em["latency_ms"] = round3(lat)
	em["ops_per_s"] = round3(r.ReadOps + r.WriteOps)
	g.observeEdge(es, on.base, now, r.M.Time)
}

func (g *graph) applyCephHealth(r *pipeline.CephHealth, now time.Time) {
	cluster := r.M.Cluster
	if cluster == "" {
		cluster = "ceph-" + r.FSID
		g.unmapped["ceph_health"]++
	}
	cn := g.node(clusterID(cluster), KindCluster, r.M.Site, cluster, cluster)
	switch r.Status {
	case "HEALTH_OK":
		cn.base = pipeline.StatusOK
	case "HEALTH_WARN":
		cn.base = pipeline.StatusDegraded
	case "HEALTH_ERR":
		cn.base = pipeline.StatusDown
	default:
		cn.base = pipeline.StatusUnknown
	}
	m := metricMap(&cn.n.Metrics)
	m["osds_total"], m["osds_up"], m["osds_in"] = float64(r.OSDsTotal), float64(r.OSDsUp), float64(r.OSDsIn)
	at := attrMap(&cn.n.Attrs)
	at["ceph_health"], at["ceph_checks"] = r.Status, strings.Join(r.Checks, ",")
	g.markNode(cn.n.ID)
	g.observeNode(cn, now, r.M.Time)
}

func workloadID(cluster, ns, name string) string {
	return "workload:" + cluster + "/" + ns + "/" + name
}

// workloadName is the name a flow's workload is drawn with: "" is outside the clusters.
func workloadName(name string) string {
	if name == "" {
		return "(external)"
	}
	return name
}

func (g *graph) workload(cluster, site, ns, name string) *nodeState {
	name = workloadName(name)
	label := name
	if ns != "" {
		label = ns + "/" + name
	}
	wn := g.node(workloadID(cluster, ns, name), KindWorkload, site, cluster, label)
	if ns != "" {
		attrMap(&wn.n.Attrs)["namespace"] = ns
	}
	return wn
}

// clusterSite is the site of cluster as the map places it (the inventory's clusters are
// seeded with theirs); "" when unknown.
func (g *graph) clusterSite(cluster string) string {
	if c, ok := g.nodes[clusterID(cluster)]; ok {
		return c.n.Site
	}
	return ""
}

// applyFlowEdge draws a flow between two workloads. Across a cluster mesh the call is
// seen twice: by the client's relay (egress: DestCluster names the server's cluster) and
// by the server's (ingress: SourceCluster names the client's). Both are one edge, between
// the client's workload at its cluster's site and the server's at its own; it shows the
// client's view (Hubble's egress, which also sees the calls that never arrived), and the
// server's only while the edge has no client's view of its own within stale_after before
// it (the client's cluster unwatched, or its relay silent). So the call is drawn once,
// its counts not added up twice, and the choice depends only on the records' times.
func (g *graph) applyFlowEdge(r *pipeline.FlowEdge, now time.Time) {
	cluster := r.M.Cluster
	site := r.M.Site
	if cluster == "" {
		g.unmapped["flow_edge"]++
	}
	srcCluster, srcSite := cluster, site
	if r.SourceCluster != "" && r.SourceCluster != cluster {
		srcCluster, srcSite = r.SourceCluster, g.clusterSite(r.SourceCluster)
	}
	dstCluster, dstSite := cluster, site
	if r.DestCluster != "" && r.DestCluster != cluster {
		dstCluster, dstSite = r.DestCluster, g.clusterSite(r.DestCluster)
	}
	id := "flow:" + workloadID(srcCluster, r.SourceNamespace, workloadName(r.SourceWorkload)) + "->" +
		workloadID(dstCluster, r.DestNamespace, workloadName(r.DestWorkload)) + fmt.Sprintf(":%s/%d", r.Protocol, r.Port)
	serverView := srcCluster != cluster
	if es := g.edges[id]; serverView && es != nil && !es.clientAt.IsZero() && r.M.Time.Sub(es.clientAt) < g.rules.StaleAfter {
		return
	}
	src := g.workload(srcCluster, srcSite, r.SourceNamespace, r.SourceWorkload)
	dst := g.workload(dstCluster, dstSite, r.DestNamespace, r.DestWorkload)
	es := g.edge(id, KindFlow, src.n.ID, dst.n.ID)
	at := attrMap(&es.e.Attrs)
	if srcCluster != dstCluster {
		at["observed_in"] = cluster // whose relay's view is shown
		if !serverView && r.M.Time.After(es.clientAt) {
			es.clientAt = r.M.Time
		}
	}
	secs := r.Interval.Seconds()
	if secs <= 0 {
		secs = 1
	}
	m := metricMap(&es.e.Metrics)
	m["requests_per_s"] = round3(float64(r.Requests) / secs)
	m["flows_per_s"] = round3(float64(r.Flows) / secs)
	m["drops_per_s"] = round3(float64(r.Drops) / secs)
	errRatio := 0.0
	if r.Requests > 0 {
		errRatio = float64(r.Errors) / float64(r.Requests)
	}
	m["error_ratio"] = round3(errRatio)
	m["p50_ms"], m["p90_ms"], m["p99_ms"] = ms(r.LatencyP50), ms(r.LatencyP90), ms(r.LatencyP99)
	at["protocol"], at["port"] = r.Protocol, fmt.Sprint(r.Port)
	status := pipeline.StatusOK
	switch {
	case r.Flows > 0 && r.Drops >= r.Flows:
		status = pipeline.StatusDown
	case r.Drops > 0 || (r.Requests > 0 && errRatio >= g.rules.FlowErrorDegraded):
		status = pipeline.StatusDegraded
	}
	g.observeEdge(es, status, now, r.M.Time)
	g.observeNode(src, now, r.M.Time)
	g.observeNode(dst, now, r.M.Time)
}

func (g *graph) applyProbe(r *pipeline.Probe, now time.Time) {
	// A DNS probe measures the GeoDNS's answer, not the POP it names (the steer edges show
	// who answers whom); once a POP is drained no DNS probe reaches it, so its last good one
	// would hold the POP up. POP health is its TCP, HTTP and ICMP probes, as for steering.
	if r.Method == "dns" {
		return
	}
	if r.POP == "" {
		g.unmapped["probe"]++
		return
	}
	var src *nodeState
	if r.M.Site != "" {
		src = g.node(siteID(r.M.Site), KindSite, r.M.Site, "", r.M.Site)
	} else {
		src = g.nodeFor(r.Vantage, "", "")
		g.unmapped["probe_vantage"]++
	}
	pop := g.node(popID(r.POP), KindPOP, g.popSite(r.POP), "", r.POP)
	method := r.Method
	id := "probe:" + r.Vantage + "->" + r.POP + "/" + method
	if r.ClientRegion != "" {
		id += "/" + r.ClientRegion
	}
	es := g.edge(id, KindProbe, src.n.ID, pop.n.ID)
	status := pipeline.StatusOK
	switch {
	case !r.Success:
		status = pipeline.StatusDown
	case r.RTT > g.rules.ProbeRTTDegraded:
		status = pipeline.StatusDegraded
	}
	m := metricMap(&es.e.Metrics)
	m["rtt_ms"] = ms(r.RTT)
	at := attrMap(&es.e.Attrs)
	at["vantage"], at["method"], at["service"], at["target"] = r.Vantage, method, r.Service, r.Target
	at["error"] = r.Error
	if r.ClientRegion != "" {
		at["client_region"] = r.ClientRegion
	}
	if r.Success && src.n.Site != "" && pop.n.Site != "" {
		g.siteRTT[sitePair(src.n.Site, pop.n.Site)] = ms(r.RTT)
	}
	g.observeEdge(es, status, now, r.M.Time)
}

func (g *graph) applySteering(r *pipeline.SteeringDecision, now time.Time) {
	g.setWeight(Weight{Service: r.Service, Region: r.ClientRegion, POP: r.POP, Weight: r.NewWeight, Cause: r.Cause, Reason: r.Reason, Since: r.M.Time, RegretMs: r.RegretMs}, r.OldWeight, now)
}

// setWeight draws one steering weight: a decision (old is the weight before it) or a
// weight steering reports unchanged (old is the weight the map shows).
func (g *graph) setWeight(w Weight, old float64, now time.Time) {
	pop := g.node(popID(w.POP), KindPOP, g.popSite(w.POP), "", w.POP)
	base := 1.0
	if g.inv != nil {
		if p, ok := g.inv.POP(w.POP); ok {
			base = baseWeight(p)
		}
	}
	if w.Region == "" {
		// A global decision is the POP's weight for the service.
		metricMap(&pop.n.Metrics)["weight/"+w.Service] = w.Weight
		g.markNode(pop.n.ID)
		g.observeNode(pop, now, w.Since)
		return
	}
	rn := g.node(regionID(w.Region), KindRegion, "", "", w.Region)
	es := g.edge(steerID(w), KindSteer, rn.n.ID, pop.n.ID)
	if w.Since.Before(es.weightAt) {
		// A decision the pipeline delivered after steering had already reported a later
		// weight: it is still an observation, but not the current weight.
		es.seen = now
		return
	}
	es.weightAt = w.Since
	status := pipeline.StatusOK
	switch {
	case w.Weight <= 0:
		status = pipeline.StatusDown
	case w.Weight < base:
		status = pipeline.StatusDegraded
	}
	m := metricMap(&es.e.Metrics)
	m["weight"], m["old_weight"], m["regret_ms"] = w.Weight, old, regretMs(w.RegretMs)
	at := attrMap(&es.e.Attrs)
	at["service"], at["cause"], at["reason"] = w.Service, w.Cause, w.Reason
	g.observeEdge(es, status, now, w.Since)
	g.observeNode(rn, now, w.Since)
}

// regretMs rounds a regret to 0.1 ms: steering's smoothed RTTs move it a little every
// tick, which would otherwise re-send the arrows of a held region on every tick.
func regretMs(v float64) float64 { return math.Round(v*10) / 10 }

func steerID(w Weight) string { return "steer:" + w.Region + "->" + w.POP + "/" + w.Service }

// applyWeights folds in the weights steering reports now. Each is an observation, so a
// weight that stays the same stays fresh (decisions come only on change); only what
// differs from the map, or had gone stale, goes out in the next delta.
func (g *graph) applyWeights(ws []Weight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for _, w := range ws {
		es, ok := g.edges[steerID(w)]
		if !ok {
			g.setWeight(w, w.Weight, now)
			continue
		}
		if es.base != pipeline.StatusUnknown && es.e.Metrics["weight"] == w.Weight && es.e.Metrics["regret_ms"] == regretMs(w.RegretMs) &&
			es.e.Attrs["cause"] == w.Cause && es.e.Attrs["reason"] == w.Reason {
			es.seen = now
			g.observeNode(g.nodes[es.e.Source], now, w.Since)
			continue
		}
		g.setWeight(w, es.e.Metrics["weight"], now)
	}
}
