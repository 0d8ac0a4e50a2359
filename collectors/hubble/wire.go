package hubble

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

// decoder reads GetFlowsResponse messages as they come off the wire into Flow records.
// It reads only the fields Meridian stores (protowire), straight into the record, with
// the standard protobuf semantics: the last value of a repeated scalar wins, repeated
// sub-messages merge, the last member of a oneof wins, fields with an unexpected wire
// type are skipped as unknown. What it derives from recurring parts (an endpoint's
// workload and labels, addresses, node names, paths) it remembers, keyed by their wire
// bytes, so a repeat costs a map lookup and no allocation. One per relay: not safe for
// concurrent use.
type decoder struct {
	parser    *Parser
	owners    Owners                       // pod owners from the API; nil: none
	snap      *inventory.Snapshot          // the snapshot owners reads
	endpoints map[string]pipeline.Endpoint // by the Endpoint message's bytes; IP unset
	addrs     map[string]netip.Addr
	nodes     map[string]string // raw node name -> without the cluster/ prefix
	paths     map[string]string // raw URL -> urlPath
	texts     map[string]string // HTTP methods, DNS queries
}

// decoderCache bounds each of a decoder's maps: a full map is cleared, so a stream of
// ever-new values costs a re-derivation, never memory.
const decoderCache = 4096

func newDecoder(p *Parser) *decoder {
	return &decoder{parser: p, endpoints: map[string]pipeline.Endpoint{}, addrs: map[string]netip.Addr{},
		nodes: map[string]string{}, paths: map[string]string{}, texts: map[string]string{}}
}

// follow makes the decoder name owners from snap (the cluster's workloads): endpoints
// remembered from an older snapshot are derived again.
func (d *decoder) follow(snap *inventory.Snapshot, cluster string) {
	if snap == d.snap {
		return
	}
	d.snap = snap
	d.owners = func(ns, pod string) (string, string, bool) {
		w, ok := snap.WorkloadOfPod(cluster, ns, pod)
		return w.Name, w.Kind, ok
	}
	clear(d.endpoints)
}

// response is one GetFlowsResponse as the relay loop reads it.
type response struct {
	flow    []byte    // the Flow message; nil when the response carries none
	other   bool      // node_status or lost_events: read with the standard decoder
	time    time.Time // the response's own time, zero when absent or invalid
	hasTime bool
}

// flowInfo is what the relay loop needs of a flow beyond its record.
type flowInfo struct {
	timed               bool // the flow carried a valid time of its own
	source, destination bool // endpoints present
	l4                  bool
	response            bool // an L7 response: the half with status, rcode and latency
}

var errTruncated = errors.New("truncated or malformed protobuf")

// sub collects a sub-message's bytes; repeated occurrences are concatenated, which
// protobuf defines as merging them.
type sub struct {
	b  []byte
	ok bool
}

func (s *sub) add(v []byte) {
	if !s.ok {
		s.b, s.ok = v, true
		return
	}
	s.b = append(s.b[:len(s.b):len(s.b)], v...) // a copy: never write into the wire buffer
}

// fields walks the fields of a message, calling bytesField for length-delimited ones
// and varintField for varints; every other field is skipped. One-byte tags, lengths and
// varints, most of a flow's, are read inline: protowire's functions are not inlined, and
// this loop is most of the decoder's instructions.
func fields(b []byte, bytesField func(protowire.Number, []byte), varintField func(protowire.Number, uint64)) error {
	for len(b) > 0 {
		var num protowire.Number
		var typ protowire.Type
		if b[0] < 0x80 {
			num, typ, b = protowire.Number(b[0]>>3), protowire.Type(b[0]&7), b[1:]
			if num == 0 {
				return errTruncated
			}
		} else {
			var n int
			if num, typ, n = protowire.ConsumeTag(b); n < 0 {
				return errTruncated
			}
			b = b[n:]
		}
		switch typ {
		case protowire.BytesType:
			var v []byte
			if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
				v, b = b[1:1+b[0]], b[1+b[0]:]
			} else {
				var n int
				if v, n = protowire.ConsumeBytes(b); n < 0 {
					return errTruncated
				}
				b = b[n:]
			}
			if bytesField != nil {
				bytesField(num, v)
			}
		case protowire.VarintType:
			var v uint64
			if len(b) > 0 && b[0] < 0x80 {
				v, b = uint64(b[0]), b[1:]
			} else {
				var n int
				if v, n = protowire.ConsumeVarint(b); n < 0 {
					return errTruncated
				}
				b = b[n:]
			}
			if varintField != nil {
				varintField(num, v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errTruncated
			}
			b = b[n:]
		}
	}
	return nil
}

// readResponse splits a GetFlowsResponse.
func readResponse(b []byte) (response, error) {
	var r response
	var flow, ts sub
	last := protowire.Number(0) // the oneof member set last
	err := fields(b, func(num protowire.Number, v []byte) {
		switch num {
		case 1: // flow
			if last != 1 {
				flow = sub{}
			}
			flow.add(v)
			last = 1
		case 2, 3: // node_status, lost_events
			last = num
		case 1001:
			ts.add(v)
		}
	}, nil)
	if err != nil {
		return r, fmt.Errorf("GetFlowsResponse: %w", err)
	}
	switch last {
	case 1:
		r.flow = flow.b
		if r.flow == nil {
			r.flow = []byte{}
		}
	case 2, 3:
		r.other = true
	}
	if ts.ok {
		t, valid, err := readTimestamp(ts.b)
		if err != nil {
			return r, fmt.Errorf("GetFlowsResponse.time: %w", err)
		}
		r.time, r.hasTime = t, valid
	}
	return r, nil
}

// readTimestamp reads a google.protobuf.Timestamp; valid is timestamppb's IsValid.
func readTimestamp(b []byte) (t time.Time, valid bool, err error) {
	var ts timestamppb.Timestamp
	err = fields(b, nil, func(num protowire.Number, v uint64) {
		switch num {
		case 1:
			ts.Seconds = int64(v)
		case 2:
			ts.Nanos = int32(v)
		}
	})
	if err != nil || !ts.IsValid() {
		return time.Time{}, false, err
	}
	return ts.AsTime(), true, nil
}

// flow reads a Flow message into r (which it resets); fallback is the time used when the
// flow has none, cluster the relay's cluster. The record means what Parser.Parse made of
// the same flow decoded by the standard code.
func (d *decoder) flow(b []byte, cluster string, fallback time.Time, r *pipeline.Flow) (flowInfo, error) {
	var info flowInfo
	var ts, ip, l4, src, dst, l7, isReply sub
	var node []byte
	var verdict, dropDesc, direction int32
	var dropReason uint32
	var reply bool
	err := fields(b, func(num protowire.Number, v []byte) {
		switch num {
		case 1:
			ts.add(v)
		case 5:
			ip.add(v)
		case 6:
			l4.add(v)
		case 8:
			src.add(v)
		case 9:
			dst.add(v)
		case 11:
			node = v
		case 15:
			l7.add(v)
		case 26:
			isReply.add(v)
		}
	}, func(num protowire.Number, v uint64) {
		switch num {
		case 2:
			verdict = int32(v)
		case 3:
			dropReason = uint32(v)
		case 16:
			reply = v != 0
		case 22:
			direction = int32(v)
		case 25:
			dropDesc = int32(v)
		}
	})
	if err != nil {
		return info, fmt.Errorf("Flow: %w", err)
	}
	*r = pipeline.Flow{M: pipeline.Meta{Time: fallback, Cluster: cluster, Node: d.node(node)}}
	if ts.ok {
		t, valid, err := readTimestamp(ts.b)
		if err != nil {
			return info, fmt.Errorf("Flow.time: %w", err)
		}
		if valid {
			r.M.Time, info.timed = t, true
		}
	}
	if info.source = src.ok; src.ok {
		if r.Source, err = d.endpoint(src.b); err != nil {
			return info, fmt.Errorf("Flow.source: %w", err)
		}
	}
	if info.destination = dst.ok; dst.ok {
		if r.Destination, err = d.endpoint(dst.b); err != nil {
			return info, fmt.Errorf("Flow.destination: %w", err)
		}
	}
	if ip.ok {
		var s, t []byte
		if err := fields(ip.b, func(num protowire.Number, v []byte) {
			switch num {
			case 1:
				s = v
			case 2:
				t = v
			}
		}, nil); err != nil {
			return info, fmt.Errorf("Flow.IP: %w", err)
		}
		r.Source.IP, r.Destination.IP = d.addr(s), d.addr(t)
	}
	if info.l4 = l4.ok; l4.ok {
		if err := readL4(l4.b, r); err != nil {
			return info, fmt.Errorf("Flow.l4: %w", err)
		}
	}
	r.Verdict = flowpb.Verdict(verdict).String()
	if flowpb.Verdict(verdict) == flowpb.Verdict_DROPPED {
		switch {
		case flowpb.DropReason(dropDesc) != flowpb.DropReason_DROP_REASON_UNKNOWN:
			r.DropReason = flowpb.DropReason(dropDesc).String()
		case dropReason != 0:
			r.DropReason = flowpb.DropReason(dropReason).String()
		default:
			r.DropReason = flowpb.DropReason_DROP_REASON_UNKNOWN.String()
		}
	}
	r.Direction = flowpb.TrafficDirection(direction).String()
	r.IsReply = reply // flows from before is_reply existed
	if isReply.ok {
		r.IsReply = false
		if err := fields(isReply.b, nil, func(num protowire.Number, v uint64) {
			if num == 1 {
				r.IsReply = v != 0
			}
		}); err != nil {
			return info, fmt.Errorf("Flow.is_reply: %w", err)
		}
	}
	if l7.ok {
		if info.response, err = d.l7(l7.b, r); err != nil {
			return info, fmt.Errorf("Flow.l7: %w", err)
		}
	}
	return info, nil
}

// l4Protocols names Layer4's oneof members by field number.
var l4Protocols = [...]string{1: "TCP", 2: "UDP", 3: "ICMPv4", 4: "ICMPv6", 5: "SCTP", 6: "VRRP", 7: "IGMP"}

func readL4(b []byte, r *pipeline.Flow) error {
	var proto protowire.Number // the oneof member set last
	var ports sub
	err := fields(b, func(num protowire.Number, v []byte) {
		if num < 1 || num > 7 {
			return
		}
		if num != proto {
			ports = sub{}
		}
		proto = num
		ports.add(v)
	}, nil)
	if err != nil || proto == 0 {
		return err
	}
	r.L4Protocol = l4Protocols[proto]
	if proto != 1 && proto != 2 && proto != 5 { // only TCP, UDP and SCTP have ports
		return nil
	}
	var sp, dp uint32
	if err := fields(ports.b, nil, func(num protowire.Number, v uint64) {
		switch num {
		case 1:
			sp = uint32(v)
		case 2:
			dp = uint32(v)
		}
	}); err != nil {
		return err
	}
	r.SourcePort, r.DestinationPort = port(sp), port(dp)
	return nil
}

// l7 reads a Layer7 message and reports whether it is a response.
func (d *decoder) l7(b []byte, r *pipeline.Flow) (response bool, err error) {
	var typ int32
	var latency uint64
	var record protowire.Number // the oneof member set last: 100 dns, 101 http, 102 kafka
	var rec sub
	err = fields(b, func(num protowire.Number, v []byte) {
		if num < 100 || num > 102 {
			return
		}
		if num != record {
			rec = sub{}
		}
		record = num
		rec.add(v)
	}, func(num protowire.Number, v uint64) {
		switch num {
		case 1:
			typ = int32(v)
		case 2:
			latency = v
		}
	})
	if err != nil {
		return false, err
	}
	r.L7Latency = time.Duration(min(latency, uint64(1<<63-1)))
	switch record {
	case 101:
		var code uint32
		var method, url []byte
		if err := fields(rec.b, func(num protowire.Number, v []byte) {
			switch num {
			case 2:
				method = v
			case 3:
				url = v
			}
		}, func(num protowire.Number, v uint64) {
			if num == 1 {
				code = uint32(v)
			}
		}); err != nil {
			return false, err
		}
		r.L7Type, r.HTTPMethod, r.HTTPCode, r.HTTPPath = "HTTP", d.text(method), uint16(min(code, 0xffff)), d.path(url)
	case 100:
		var rcode uint32
		var query []byte
		if err := fields(rec.b, func(num protowire.Number, v []byte) {
			if num == 1 {
				query = v
			}
		}, func(num protowire.Number, v uint64) {
			if num == 6 {
				rcode = uint32(v)
			}
		}); err != nil {
			return false, err
		}
		r.L7Type, r.DNSQuery, r.DNSRcode = "DNS", d.text(query), uint16(min(rcode, 0xffff))
	case 102:
		r.L7Type = "KAFKA"
	}
	return flowpb.L7FlowType(typ) == flowpb.L7FlowType_RESPONSE, nil
}

// endpoint maps an Endpoint message the first time its bytes are seen (decoded by the
// standard code and mapped by Parser.endpoint) and from memory afterwards.
func (d *decoder) endpoint(b []byte) (pipeline.Endpoint, error) {
	if e, ok := d.endpoints[string(b)]; ok {
		return e, nil
	}
	var pb flowpb.Endpoint
	if err := proto.Unmarshal(b, &pb); err != nil {
		return pipeline.Endpoint{}, err
	}
	e := d.parser.endpoint(&pb, d.owners)
	remember(d.endpoints, string(b), e)
	return e, nil
}

func (d *decoder) addr(b []byte) netip.Addr {
	if a, ok := d.addrs[string(b)]; ok {
		return a
	}
	a, _ := netip.ParseAddr(string(b))
	remember(d.addrs, string(b), a)
	return a
}

func (d *decoder) node(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := d.nodes[string(b)]; ok {
		return s
	}
	s := nodeName(string(b))
	remember(d.nodes, string(b), s)
	return s
}

func (d *decoder) path(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := d.paths[string(b)]; ok {
		return s
	}
	s := urlPath(string(b))
	remember(d.paths, string(b), s)
	return s
}

func (d *decoder) text(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := d.texts[string(b)]; ok {
		return s
	}
	s := string(b)
	remember(d.texts, s, s)
	return s
}

func remember[V any](m map[string]V, k string, v V) {
	if len(m) >= decoderCache {
		clear(m)
	}
	m[k] = v
}
