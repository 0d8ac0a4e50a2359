package topomap

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/pipeline"
)

// History is the stored past the map rebuilds earlier states from (storage.Store is one).
// The map only reads it: the pipeline writes the records the live map consumes.
type History interface {
	Query(ctx context.Context, sql, format string) ([]byte, error)
	Table(k pipeline.Kind) string
}

// pastGraph is the graph as it stood at an instant, rebuilt from history; step moves it
// forward and yields the changes as a delta, so playback is the live protocol.
type pastGraph struct {
	g  *graph
	at time.Time
}

// rebuild builds the whole graph at instant at: the inventory, then each element's latest
// record within expire_after before at (older ones would have been removed), observed at
// its own time and aged at at, so that stale elements are unknown exactly as the live map
// had them. Steering's weights are kept fresh as the live map's weight polling keeps them.
func (m *Map) rebuild(ctx context.Context, at time.Time) (*pastGraph, error) {
	if m.history == nil {
		return nil, errNoHistory
	}
	p := &pastGraph{at: at}
	p.g = newGraph(m.graph.inventory(), m.graph.rules, func() time.Time { return p.at })
	p.g.bulk = true
	type firing struct {
		alerts []alerts.Alert
		err    error
	}
	fc := make(chan firing, 1)
	go func() {
		as, err := m.pastAlerts(ctx, at)
		fc <- firing{as, err}
	}()
	recs, err := m.pastRecords(ctx, at.Add(-m.cfg.ExpireAfter), at, time.Time{})
	f := <-fc
	if err != nil {
		return nil, err
	}
	if f.err != nil {
		return nil, f.err
	}
	// Sized up front: growing maps of tens of thousands of edges rehashes them repeatedly.
	p.g.edges = make(map[string]*edgeState, len(recs))
	p.g.since = make(map[string]time.Time, len(recs)+len(p.g.nodes))
	p.g.replay(recs, at)
	p.g.applyAlerts(f.alerts)
	p.g.mu.Lock()
	p.g.settle() // ends the bulk build: from here on p steps as the live graph does
	p.g.mu.Unlock()
	return p, nil
}

var errNoHistory = fmt.Errorf("time travel needs the history store (ClickHouse), which this process does not run")

// step advances p to to, applying the records in (p.at, to].
func (m *Map) step(ctx context.Context, p *pastGraph, to time.Time) (nodes []*Node, edges []*Edge, rmNodes, rmEdges []string, err error) {
	if !to.After(p.at) {
		return nil, nil, nil, nil, nil
	}
	recs, err := m.pastRecords(ctx, p.at, to, p.at)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	firing, err := m.pastAlerts(ctx, to)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	p.at = to
	p.g.replay(recs, to)
	p.g.applyAlerts(firing)
	nodes, edges, rmNodes, rmEdges, _ = p.g.flush()
	return nodes, edges, rmNodes, rmEdges, nil
}

// elements returns p's whole graph, filtered by f, in no order (sorting 50,000 ids was a
// quarter of a rebuild). They are p's own, not clones: p has one user (a session's
// player, a request), which encodes them before it steps p again.
func (p *pastGraph) elements(f *filter) ([]*Node, []*Edge) {
	g := p.g
	g.mu.Lock()
	defer g.mu.Unlock()
	g.settle()
	g.forget()
	nodes := make([]*Node, 0, len(g.nodes))
	for _, ns := range g.nodes {
		if f.node(ns.n) {
			nodes = append(nodes, ns.n)
		}
	}
	edges := make([]*Edge, 0, len(g.edges))
	for _, es := range g.edges {
		if f.edge(es.e) {
			edges = append(edges, es.e)
		}
	}
	return nodes, edges
}

// replay applies records (in time order) each as observed at its own time, keeps the
// steering weights fresh at at, then ages the graph at at.
func (g *graph) replay(recs []pipeline.Record, at time.Time) {
	// Probes first: they only set their own edges and the site RTTs the tunnels show, and a
	// tunnel read back alone (its latest record) must show the latest RTT, as live.
	slices.SortStableFunc(recs, func(a, b pipeline.Record) int {
		_, pa := a.(*pipeline.Probe)
		_, pb := b.(*pipeline.Probe)
		if pa != pb {
			if pa {
				return -1
			}
			return 1
		}
		return a.Meta().Time.Compare(b.Meta().Time)
	})
	g.mu.Lock()
	for _, r := range recs {
		if d, ok := r.(*pipeline.SteeringDecision); ok {
			// Steering reports its weights continually (WeightSource): a weight decided
			// before at still holds at at.
			g.applySteering(d, at)
			continue
		}
		g.apply(r, r.Meta().Time)
	}
	for _, es := range g.edges {
		if es.e.Kind == KindSteer && !es.weightAt.IsZero() {
			es.seen = at
			if rn, ok := g.nodes[es.e.Source]; ok {
				rn.seen, rn.stale = at, false
			}
		}
	}
	g.mu.Unlock()
	g.age()
}

// pastAlerts reads the alerts firing at at from the ruler's alert history: each alert's
// latest row in the alerts.HistoryWindow before at (a firing alert is restated every
// alerts.KeyframeEvery), when that row says firing. An alert is its name and labels: the
// labels sorted, since a Map keeps the order its writer iterated in.
func (m *Map) pastAlerts(ctx context.Context, at time.Time) ([]alerts.Alert, error) {
	sql := fmt.Sprintf(`SELECT s.1 AS name, s.2 AS severity, s.3 AS labels, toFloat64(toUnixTimestamp64Milli(s.5)) AS active_at FROM (
  SELECT argMax(tuple(name, severity, labels, state, active_at), time) AS s FROM %s
  WHERE time > fromUnixTimestamp64Milli(%d) AND time <= fromUnixTimestamp64Milli(%d)
  GROUP BY name, toString(mapSort(labels)))
WHERE s.4 = '%s'`, m.history.Table(pipeline.KindAlertState), at.Add(-alerts.HistoryWindow).UnixMilli(), at.UnixMilli(), pipeline.AlertFiring)
	out, err := m.history.Query(ctx, sql, "JSONEachRow")
	if err != nil {
		m.metrics.historyErrors.WithLabelValues(pipeline.KindAlertState.String()).Inc()
		return nil, fmt.Errorf("topomap history %s: %w", pipeline.KindAlertState, err)
	}
	var firing []alerts.Alert
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var row struct {
			Name, Severity string
			Labels         map[string]string
			ActiveAt       float64 `json:"active_at"`
		}
		if err := dec.Decode(&row); err == io.EOF {
			break
		} else if err != nil {
			m.metrics.historyErrors.WithLabelValues(pipeline.KindAlertState.String()).Inc()
			return nil, fmt.Errorf("topomap history %s: %w", pipeline.KindAlertState, err)
		}
		firing = append(firing, alerts.Alert{Name: row.Name, Severity: row.Severity, Labels: row.Labels, ActiveAt: time.UnixMilli(int64(row.ActiveAt))})
	}
	return firing, nil
}

// pastQuery is how one table's latest record per map element is read back.
type pastQuery struct {
	kind    pipeline.Kind
	cols    string // selected in this order (time first, as unix ms)
	where   string
	groupBy string
	// inOrder: groupBy starts with the table's sort key (before time), so the latest row
	// of each group is read walking the table backwards in key order (LIMIT 1 BY), without
	// hashing every row into an aggregate: a third of argMax's CPU over 300,000 tunnel rows.
	inOrder bool
	parse   func(f []string) (pipeline.Record, error)
}

// pastQueries read what the map draws. Each element's latest row in a window comes from
// argMax over the table's rows in it, or for the big tables by reading them backwards in
// key order (inOrder): the window is expire_after at most (15 m), inside one or two daily
// partitions.
var pastQueries = []pastQuery{
	{
		kind: pipeline.KindTunnelStat,
		// The collector and the public key (44 characters) only name an end that has no
		// node name (applyTunnel), so they are sent only then.
		cols:    "toUnixTimestamp64Milli(time), if(node = '', collector, ''), site, cluster, node, interface, if(peer_node = '', public_key, ''), peer_node, peer_site, endpoint, toUnixTimestamp64Milli(last_handshake), rx_rate, tx_rate, status",
		groupBy: "site, node, interface, public_key, peer_node, collector",
		inOrder: true,
		parse: func(f []string) (pipeline.Record, error) {
			p := fields{f: f}
			r := &pipeline.TunnelStat{M: p.meta(), Interface: p.str(), PublicKey: p.str(), PeerNode: p.str(), PeerSite: p.str(), Endpoint: p.str()}
			if hs := p.int(); hs > 0 {
				r.LastHandshake = time.UnixMilli(hs)
			}
			r.RxRate, r.TxRate, r.Status = p.float(), p.float(), p.str()
			return r, p.err
		},
	},
	{
		kind:    pipeline.KindOSDStat,
		cols:    "toUnixTimestamp64Milli(time), collector, site, cluster, node, fsid, osd, host, device_class, up, `in`, commit_latency_ms, apply_latency_ms, read_latency_ms, write_latency_ms, read_ops, write_ops, read_bytes, write_bytes",
		groupBy: "cluster, fsid, osd, host",
		parse: func(f []string) (pipeline.Record, error) {
			p := fields{f: f}
			r := &pipeline.OSDStat{M: p.meta(), FSID: p.str(), OSD: uint32(p.int()), Host: p.str(), DeviceClass: p.str(), Up: p.bool(), In: p.bool()}
			r.CommitLatencyMs, r.ApplyLatencyMs, r.ReadLatencyMs, r.WriteLatencyMs = p.float(), p.float(), p.float(), p.float()
			r.ReadOps, r.WriteOps, r.ReadBytes, r.WriteBytes = p.float(), p.float(), p.float(), p.float()
			return r, p.err
		},
	},
	{
		kind:    pipeline.KindCephHealth,
		cols:    "toUnixTimestamp64Milli(time), collector, site, cluster, node, fsid, status, arrayStringConcat(checks, ','), osds_total, osds_up, osds_in",
		groupBy: "cluster, fsid",
		parse: func(f []string) (pipeline.Record, error) {
			p := fields{f: f}
			r := &pipeline.CephHealth{M: p.meta(), FSID: p.str(), Status: p.str()}
			if c := p.str(); c != "" {
				r.Checks = strings.Split(c, ",")
			}
			r.OSDsTotal, r.OSDsUp, r.OSDsIn = uint32(p.int()), uint32(p.int()), uint32(p.int())
			return r, p.err
		},
	},
	{
		kind:    pipeline.KindFlowEdge,
		cols:    "toUnixTimestamp64Milli(time), collector, site, cluster, node, `interval`, src_namespace, src_workload, src_cluster, dst_namespace, dst_workload, dst_cluster, protocol, port, flows, drops, requests, errors, latency_p50, latency_p90, latency_p99",
		groupBy: "cluster, src_namespace, src_workload, dst_namespace, dst_workload, dst_cluster, src_cluster, protocol, port",
		inOrder: true,
		parse: func(f []string) (pipeline.Record, error) {
			p := fields{f: f}
			r := &pipeline.FlowEdge{M: p.meta(), Interval: time.Duration(p.int()), SourceNamespace: p.str(), SourceWorkload: p.str(), SourceCluster: p.str(),
				DestNamespace: p.str(), DestWorkload: p.str(), DestCluster: p.str(), Protocol: p.str(), Port: uint16(p.int())}
			r.Flows, r.Drops, r.Requests, r.Errors = uint64(p.int()), uint64(p.int()), uint64(p.int()), uint64(p.int())
			r.LatencyP50, r.LatencyP90, r.LatencyP99 = time.Duration(p.int()), time.Duration(p.int()), time.Duration(p.int())
			return r, p.err
		},
	},
	{
		kind:    pipeline.KindProbe,
		cols:    "toUnixTimestamp64Milli(time), collector, site, cluster, node, vantage, method, pop, service, client_region, target, success, rtt, error",
		where:   "method != 'dns' AND pop != ''", // as applyProbe: DNS probes do not make POP health
		groupBy: "vantage, pop, method, client_region",
		parse: func(f []string) (pipeline.Record, error) {
			p := fields{f: f}
			r := &pipeline.Probe{M: p.meta(), Vantage: p.str(), Method: p.str(), POP: p.str(), Service: p.str(), ClientRegion: p.str(), Target: p.str(), Success: p.bool()}
			r.RTT, r.Error = time.Duration(p.int()), p.str()
			return r, p.err
		},
	},
	{
		kind:    pipeline.KindSteeringDecision,
		cols:    "toUnixTimestamp64Milli(time), collector, site, cluster, node, service, client_region, pop, old_weight, new_weight, cause, reason, regret_ms",
		groupBy: "service, client_region, pop",
		parse: func(f []string) (pipeline.Record, error) {
			p := fields{f: f}
			r := &pipeline.SteeringDecision{M: p.meta(), Service: p.str(), ClientRegion: p.str(), POP: p.str(), OldWeight: p.float(), NewWeight: p.float(), Cause: p.str(), Reason: p.str()}
			r.RegretMs = p.float()
			return r, p.err
		},
	},
}

// pastRecords reads each element's latest record with a time in (from, to]. Steering
// decisions are read from after (the zero time: the whole retention), since a weight
// holds until the next decision however old it is.
func (m *Map) pastRecords(ctx context.Context, from, to, steerFrom time.Time) ([]pipeline.Record, error) {
	type result struct {
		recs []pipeline.Record
		err  error
	}
	results := make([]chan result, len(pastQueries))
	for i, q := range pastQueries {
		results[i] = make(chan result, 1)
		lo := from
		if q.kind == pipeline.KindSteeringDecision {
			lo = steerFrom
		}
		go func() {
			recs, err := m.queryPast(ctx, q, lo, to)
			results[i] <- result{recs, err}
		}()
	}
	var all []pipeline.Record
	var firstErr error
	for _, c := range results {
		r := <-c
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
		all = append(all, r.recs...)
	}
	return all, firstErr
}

func (m *Map) queryPast(ctx context.Context, q pastQuery, from, to time.Time) ([]pipeline.Record, error) {
	where := fmt.Sprintf("time > fromUnixTimestamp64Milli(%d) AND time <= fromUnixTimestamp64Milli(%d)", from.UnixMilli(), to.UnixMilli())
	if from.IsZero() {
		where = fmt.Sprintf("time <= fromUnixTimestamp64Milli(%d)", to.UnixMilli())
	}
	if q.where != "" {
		where += " AND " + q.where
	}
	sql := fmt.Sprintf("SELECT untuple(argMax(tuple(%s), time)) FROM %s WHERE %s GROUP BY %s",
		q.cols, m.history.Table(q.kind), where, q.groupBy)
	if q.inOrder {
		sql = fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY %s DESC, time DESC LIMIT 1 BY %s",
			q.cols, m.history.Table(q.kind), where, strings.ReplaceAll(q.groupBy, ",", " DESC,"), q.groupBy)
	}
	out, err := m.history.Query(ctx, sql, "TabSeparated")
	if err != nil {
		m.metrics.historyErrors.WithLabelValues(q.kind.String()).Inc()
		return nil, fmt.Errorf("topomap history %s: %w", q.kind, err)
	}
	var recs []pipeline.Record
	var f []string
	// One string for the whole answer: fields are slices of it, not a copy each.
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		f = f[:0]
		for field := range strings.SplitSeq(line, "\t") {
			f = append(f, field)
		}
		r, err := q.parse(f)
		if err != nil {
			// One unreadable row must not hide the rest of the past: count it and go on.
			m.metrics.historyErrors.WithLabelValues(q.kind.String()).Inc()
			m.log.Warn("topomap history: unreadable row", "table", m.history.Table(q.kind), "err", err)
			continue
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// fields reads one TabSeparated row in column order; the first error sticks.
type fields struct {
	f   []string
	i   int
	err error
}

func (p *fields) next() string {
	if p.i >= len(p.f) {
		if p.err == nil {
			p.err = fmt.Errorf("row has %d columns, want more", len(p.f))
		}
		return ""
	}
	p.i++
	return p.f[p.i-1]
}

func (p *fields) meta() pipeline.Meta {
	ms := p.int()
	return pipeline.Meta{Time: time.UnixMilli(ms), Collector: p.str(), Site: p.str(), Cluster: p.str(), Node: p.str()}
}

var tsvUnescape = strings.NewReplacer(`\\`, `\`, `\t`, "\t", `\n`, "\n", `\r`, "\r", `\'`, "'", `\0`, "\x00", `\b`, "\b", `\f`, "\f")

func (p *fields) str() string {
	s := p.next()
	if strings.IndexByte(s, '\\') >= 0 {
		s = tsvUnescape.Replace(s)
	}
	return s
}

func (p *fields) int() int64 {
	s := p.next()
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		u, uerr := strconv.ParseUint(s, 10, 64)
		if uerr != nil && p.err == nil {
			p.err = fmt.Errorf("column %d: %w", p.i, err)
		}
		return int64(u)
	}
	return v
}

func (p *fields) float() float64 {
	s := p.next()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("column %d: %w", p.i, err)
	}
	return v
}

func (p *fields) bool() bool {
	switch s := p.next(); s {
	case "true", "1":
		return true
	case "false", "0":
		return false
	default:
		if p.err == nil {
			p.err = fmt.Errorf("column %d: %q is not a bool", p.i, s)
		}
		return false
	}
}

// parseInstant reads an instant as unix milliseconds or RFC 3339.
func parseInstant(s string) (time.Time, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("at=%q: want unix milliseconds or RFC 3339", s)
	}
	return t, nil
}
