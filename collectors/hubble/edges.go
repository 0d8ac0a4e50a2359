package hubble

import (
	"sort"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// OtherWorkload names the overflow edge that absorbs workload pairs beyond the per
// interval limit.
const OtherWorkload = "other"

// LostWorkload names the edge that counts the flows Hubble reported lost (its lost
// events) in the interval they were reported: they are in the totals, with no pair.
const LostWorkload = "lost"

// edgeKey is one workload pair, oriented from client to server; dstCluster is the
// server's cluster when it is another than the client's ("" the same), srcCluster the
// client's when it is another than the server's, the relay's own (at most one is set).
type edgeKey struct {
	srcNS, srcWorkload string
	dstNS, dstWorkload string
	srcCluster         string
	dstCluster         string
	protocol           string
	port               uint16
}

type edgeAcc struct {
	flows, sampled, drops uint64
	requests, errors      uint64
	dropReasons           map[string]uint64
	latency               *latencySketch
}

type window struct {
	start time.Time
	edges map[edgeKey]*edgeAcc
}

// edgeAggregator folds one relay's flows into FlowEdge records per interval. It is owned
// by the relay's goroutine and not safe for concurrent use.
//
// Memory is bounded: a window holds at most maxPairs pairs (later pairs go to one
// "other" edge, counted), and at most maxWindows windows are open (the oldest is emitted
// early when a flow opens one more). A window is emitted once the newest flow time seen
// is past its end plus grace, or when the stream goes idle, so late flows within grace
// land in their own second.
type edgeAggregator struct {
	meta       pipeline.Meta // Collector, Site, Cluster for every edge
	interval   time.Duration
	grace      time.Duration
	maxPairs   int
	maxWindows int
	windows    map[int64]*window
	watermark  time.Time
	overflowed func(n int) // counts flows sent to the overflow edge

	// Per-flow shortcuts, both undone whenever a window closes. nextEnd is the end of the
	// oldest open window (zero: none open): until the watermark less grace reaches it,
	// advance has nothing to scan for. last is the pair the previous flow counted on:
	// consecutive flows of one connection skip hashing the pair's key.
	nextEnd time.Time
	last    struct {
		w *window
		k edgeKey
		e *edgeAcc
	}
}

func newEdgeAggregator(meta pipeline.Meta, interval, grace time.Duration, maxPairs, maxWindows int, overflowed func(int)) *edgeAggregator {
	return &edgeAggregator{meta: meta, interval: interval, grace: grace, maxPairs: maxPairs, maxWindows: maxWindows,
		windows: map[int64]*window{}, overflowed: overflowed}
}

// add folds one flow in; response marks the L7 response half of a request (the one with
// status, rcode and latency), sampled a flow whose raw record is not stored. It returns
// edges of windows that closed.
func (a *edgeAggregator) add(f *pipeline.Flow, response, sampled bool) []pipeline.Record {
	var out []pipeline.Record
	e := a.acc(f.M.Time, orient(f, a.meta.Cluster), 1, &out)
	e.flows++
	if sampled {
		e.sampled++
	}
	if f.Verdict == "DROPPED" {
		e.drops++
		if e.dropReasons == nil {
			e.dropReasons = map[string]uint64{}
		}
		e.dropReasons[f.DropReason]++
	}
	if response && f.L7Type != "" {
		e.requests++
		if f.HTTPCode >= 500 || f.DNSRcode != 0 {
			e.errors++
		}
		if f.L7Latency > 0 {
			if e.latency == nil {
				e.latency = newSketch()
			}
			e.latency.add(f.L7Latency)
		}
	}
	return a.advance(f.M.Time, out)
}

// lost counts n flows Hubble reported lost at t on the lost edge.
func (a *edgeAggregator) lost(t time.Time, n uint64) []pipeline.Record {
	var out []pipeline.Record
	e := a.acc(t, edgeKey{srcWorkload: LostWorkload, dstWorkload: LostWorkload}, int(min(n, 1<<31)), &out)
	e.flows += n
	e.sampled += n
	return a.advance(t, out)
}

// acc is the accumulator of k in the window of t, opening the window (and emitting the
// oldest into out when too many are open) or sending k's n flows to the overflow edge.
func (a *edgeAggregator) acc(t time.Time, k edgeKey, n int, out *[]pipeline.Record) *edgeAcc {
	start := t.Truncate(a.interval)
	w := a.windows[start.UnixNano()]
	if w == nil {
		if len(a.windows) >= a.maxWindows {
			*out = a.emitOldest(*out)
		}
		w = &window{start: start, edges: map[edgeKey]*edgeAcc{}}
		a.windows[start.UnixNano()] = w
		if end := start.Add(a.interval); a.nextEnd.IsZero() || end.Before(a.nextEnd) {
			a.nextEnd = end
		}
	}
	if w == a.last.w && k == a.last.k {
		return a.last.e
	}
	e := w.edges[k]
	if e == nil {
		if len(w.edges) >= a.maxPairs {
			k = edgeKey{srcWorkload: OtherWorkload, dstWorkload: OtherWorkload}
			e = w.edges[k]
			a.overflowed(n)
		}
		if e == nil {
			e = &edgeAcc{}
			w.edges[k] = e
		}
	}
	a.last.w, a.last.k, a.last.e = w, k, e // k: the overflow edge's key if it overflowed
	return e
}

// advance moves the watermark to t and emits the windows it closes.
func (a *edgeAggregator) advance(t time.Time, out []pipeline.Record) []pipeline.Record {
	if t.After(a.watermark) {
		a.watermark = t
		if upTo := t.Add(-a.grace); !a.nextEnd.IsZero() && !a.nextEnd.After(upTo) {
			out = a.emit(out, upTo)
		}
	}
	return out
}

// flush emits every open window (stream idle or ending).
func (a *edgeAggregator) flush() []pipeline.Record {
	var out []pipeline.Record
	for len(a.windows) > 0 {
		out = a.emitOldest(out)
	}
	return out
}

// emit appends the windows that ended at or before upTo, oldest first.
func (a *edgeAggregator) emit(out []pipeline.Record, upTo time.Time) []pipeline.Record {
	var starts []int64
	for s, w := range a.windows {
		if !w.start.Add(a.interval).After(upTo) {
			starts = append(starts, s)
		}
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for _, s := range starts {
		out = a.emitWindow(out, s)
	}
	return out
}

func (a *edgeAggregator) emitOldest(out []pipeline.Record) []pipeline.Record {
	first := true
	var oldest int64
	for s := range a.windows {
		if first || s < oldest {
			oldest, first = s, false
		}
	}
	return a.emitWindow(out, oldest)
}

func (a *edgeAggregator) emitWindow(out []pipeline.Record, start int64) []pipeline.Record {
	w := a.windows[start]
	delete(a.windows, start)
	a.last.w, a.last.e = nil, nil // lets the closed window go
	a.nextEnd = time.Time{}
	for _, o := range a.windows {
		if end := o.start.Add(a.interval); a.nextEnd.IsZero() || end.Before(a.nextEnd) {
			a.nextEnd = end
		}
	}
	for k, e := range w.edges {
		m := a.meta
		m.Time = w.start
		r := &pipeline.FlowEdge{M: m, Interval: a.interval,
			SourceNamespace: k.srcNS, SourceWorkload: k.srcWorkload, DestNamespace: k.dstNS, DestWorkload: k.dstWorkload,
			SourceCluster: k.srcCluster, DestCluster: k.dstCluster, Protocol: k.protocol, Port: k.port,
			Flows: e.flows, Sampled: e.sampled, Drops: e.drops, DropReasons: e.dropReasons, Requests: e.requests, Errors: e.errors}
		if e.latency != nil {
			r.LatencyP50, r.LatencyP90, r.LatencyP99 = e.latency.quantile(0.5), e.latency.quantile(0.9), e.latency.quantile(0.99)
			e.latency.release()
		}
		out = append(out, r)
	}
	return out
}

// orient keys a flow from client to server: a reply travels from the server, so its
// endpoints are swapped and the server's port is its source port. The server is in
// another cluster when both ends name their clusters and the names differ (Cilium names
// every pod endpoint's cluster, a cluster mesh's remote ones included; reserved
// identities such as world or host have none); local, the relay's cluster, is no other.
// Symmetrically, the relay of the server's cluster sees the flow come in from a client of
// another cluster: that one is the client's cluster. When neither end names the relay's
// cluster, the client is taken as local (the server's cluster is the other).
func orient(f *pipeline.Flow, local string) edgeKey {
	src, dst, port := &f.Source, &f.Destination, f.DestinationPort
	if f.IsReply {
		src, dst, port = dst, src, f.SourcePort
	}
	k := edgeKey{srcNS: src.Namespace, srcWorkload: src.Workload, dstNS: dst.Namespace, dstWorkload: dst.Workload,
		protocol: f.L4Protocol, port: port}
	if src.Cluster != "" && dst.Cluster != "" && dst.Cluster != src.Cluster {
		if dst.Cluster != local {
			k.dstCluster = dst.Cluster
		} else {
			k.srcCluster = src.Cluster
		}
	}
	return k
}
