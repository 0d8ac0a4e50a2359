package hubble

import (
	"net/netip"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/meridianhq/meridian/pipeline"
)

// refParse is the mapping as it was before the wire decoder (#24), over a flow decoded
// by the standard protobuf code: the reference the differential test holds the decoder
// to. It maps one flow to a record. Missing parts (no endpoints, no L4, unknown enum
// values) leave their fields empty or carry the raw enum number: a flow is always
// stored with what is known. fallback is the time used when the flow has none (the
// response's time); cluster is the relay's cluster.
func refParse(p *Parser, f *flowpb.Flow, cluster string, fallback time.Time) pipeline.Flow {
	r := pipeline.Flow{M: pipeline.Meta{Time: fallback, Cluster: cluster, Node: nodeName(f.GetNodeName())}}
	if ts := f.GetTime(); ts != nil && ts.IsValid() {
		r.M.Time = ts.AsTime()
	}
	r.Source = p.endpoint(f.GetSource(), nil)
	r.Destination = p.endpoint(f.GetDestination(), nil)
	if ip := f.GetIP(); ip != nil {
		r.Source.IP, _ = netip.ParseAddr(ip.GetSource())
		r.Destination.IP, _ = netip.ParseAddr(ip.GetDestination())
	}
	refL4(f.GetL4(), &r)
	r.Verdict = f.GetVerdict().String()
	if f.GetVerdict() == flowpb.Verdict_DROPPED {
		switch {
		case f.GetDropReasonDesc() != flowpb.DropReason_DROP_REASON_UNKNOWN:
			r.DropReason = f.GetDropReasonDesc().String()
		case f.GetDropReason() != 0:
			r.DropReason = flowpb.DropReason(f.GetDropReason()).String()
		default:
			r.DropReason = flowpb.DropReason_DROP_REASON_UNKNOWN.String()
		}
	}
	r.Direction = f.GetTrafficDirection().String()
	if b := f.GetIsReply(); b != nil {
		r.IsReply = b.GetValue()
	} else {
		r.IsReply = f.GetReply() // flows from before is_reply existed
	}
	refL7(f.GetL7(), &r)
	return r
}

func refL4(l4 *flowpb.Layer4, r *pipeline.Flow) {
	switch x := l4.GetProtocol().(type) {
	case *flowpb.Layer4_TCP:
		r.L4Protocol, r.SourcePort, r.DestinationPort = "TCP", port(x.TCP.GetSourcePort()), port(x.TCP.GetDestinationPort())
	case *flowpb.Layer4_UDP:
		r.L4Protocol, r.SourcePort, r.DestinationPort = "UDP", port(x.UDP.GetSourcePort()), port(x.UDP.GetDestinationPort())
	case *flowpb.Layer4_SCTP:
		r.L4Protocol, r.SourcePort, r.DestinationPort = "SCTP", port(x.SCTP.GetSourcePort()), port(x.SCTP.GetDestinationPort())
	case *flowpb.Layer4_ICMPv4:
		r.L4Protocol = "ICMPv4"
	case *flowpb.Layer4_ICMPv6:
		r.L4Protocol = "ICMPv6"
	case *flowpb.Layer4_VRRP:
		r.L4Protocol = "VRRP"
	case *flowpb.Layer4_IGMP:
		r.L4Protocol = "IGMP"
	}
}

func refL7(l7 *flowpb.Layer7, r *pipeline.Flow) {
	if l7 == nil {
		return
	}
	r.L7Latency = time.Duration(min(l7.GetLatencyNs(), uint64(1<<63-1)))
	switch x := l7.GetRecord().(type) {
	case *flowpb.Layer7_Http:
		r.L7Type = "HTTP"
		r.HTTPMethod = x.Http.GetMethod()
		r.HTTPCode = uint16(min(x.Http.GetCode(), 0xffff))
		r.HTTPPath = urlPath(x.Http.GetUrl())
	case *flowpb.Layer7_Dns:
		r.L7Type = "DNS"
		r.DNSQuery = x.Dns.GetQuery()
		r.DNSRcode = uint16(min(x.Dns.GetRcode(), 0xffff))
	case *flowpb.Layer7_Kafka:
		r.L7Type = "KAFKA"
	}
}

// isResponse reports whether an L7 flow is the response half of a request, the one that
// carries the status, rcode and latency.
func refIsResponse(l7 *flowpb.Layer7) bool { return l7.GetType() == flowpb.L7FlowType_RESPONSE }

// refInfo is what the relay loop read off a standard-decoded flow before the decoder.
func refInfo(f *flowpb.Flow) flowInfo {
	return flowInfo{timed: f.GetTime() != nil && f.GetTime().IsValid(), source: f.GetSource() != nil,
		destination: f.GetDestination() != nil, l4: f.GetL4() != nil, response: refIsResponse(f.GetL7())}
}
