package hubble

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meridianhq/meridian/collectors/hubble/hubbletest"
	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
)

const samples = "../../testdata/hubble"

func load(t testing.TB, name string) []*observer.GetFlowsResponse {
	t.Helper()
	rs, err := hubbletest.Load(filepath.Join(samples, name))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// flowAt finds the sample flow with the given RFC 3339 time.
func flowAt(t *testing.T, rs []*observer.GetFlowsResponse, ts string) *flowpb.Flow {
	t.Helper()
	want, _ := time.Parse(time.RFC3339Nano, ts)
	for _, r := range rs {
		if r.GetFlow().GetTime().AsTime().Equal(want) {
			return r.GetFlow()
		}
	}
	t.Fatalf("no flow at %s", ts)
	return nil
}

func TestParseSamples(t *testing.T) {
	p := NewParser(nil)
	tcp := load(t, "hubble-otel-basic-sample-400-tcp-flows.json")
	dns := load(t, "hubble-otel-basic-sample-330-dns-flows.json")
	drop := load(t, "cilium-docs-export-dropped-policy-denied.json")
	icmp := load(t, "hubble-otel-basic-sample-400-icmpv4-flows.json")

	t.Run("http response with latency", func(t *testing.T) {
		got := decode(t, p, flowAt(t, tcp, "2021-11-10T10:40:56.4742504Z"), "kind", time.Time{})
		want := pipeline.Flow{
			M: pipeline.Meta{Time: time.Date(2021, 11, 10, 10, 40, 56, 474250400, time.UTC), Cluster: "kind", Node: "kind-control-plane"},
			Source: pipeline.Endpoint{Namespace: "bookinfo", Pod: "ratings-v1-b6994bb9-jgqxb", Workload: "ratings", WorkloadKind: "Deployment",
				Identity: 16370, IP: netip.MustParseAddr("10.244.0.206"), Labels: []string{"app=ratings", "version=v1"}, Cluster: "kind-kind"},
			Destination: pipeline.Endpoint{Namespace: "bookinfo", Pod: "reviews-v2-7bf8c9648f-r7bs2", Workload: "reviews", WorkloadKind: "Deployment",
				Identity: 11615, IP: netip.MustParseAddr("10.244.0.110"), Labels: []string{"app=reviews", "version=v2"}, Cluster: "kind-kind"},
			L4Protocol: "TCP", SourcePort: 9080, DestinationPort: 40948, Verdict: "FORWARDED", Direction: "EGRESS", IsReply: true,
			L7Type: "HTTP", HTTPMethod: "GET", HTTPCode: 200, HTTPPath: "/ratings/0", L7Latency: 1678100 * time.Nanosecond,
		}
		diff(t, got, want)
	})
	t.Run("dns nxdomain", func(t *testing.T) {
		got := decode(t, p, flowAt(t, dns, "2021-10-04T11:22:26.593860659Z"), "gke", time.Time{})
		if got.L7Type != "DNS" || got.DNSRcode != 3 || got.DNSQuery != "istiod-istio-1611.istio-system.svc.istio-system.svc.cluster.local." ||
			got.Source.Workload != "kube-dns" || got.Destination.Workload != "node-local-dns" || got.Destination.WorkloadKind != "" || !got.IsReply {
			t.Errorf("dns response: %+v", got)
		}
	})
	t.Run("dropped policy denied", func(t *testing.T) {
		got := decode(t, p, drop[0].GetFlow(), "kind", time.Time{})
		want := pipeline.Flow{
			M:           pipeline.Meta{Time: time.Date(2023, 8, 21, 12, 12, 18, 510175415, time.UTC), Cluster: "kind", Node: "kind-worker"},
			Source:      pipeline.Endpoint{Namespace: "default", Pod: "xwing", Workload: "xwing", IP: netip.MustParseAddr("10.244.1.60")},
			Destination: pipeline.Endpoint{Namespace: "default", Pod: "deathstar-7848d6c4d5-th9v2", Workload: "deathstar", WorkloadKind: "Deployment", IP: netip.MustParseAddr("10.244.1.5")},
			L4Protocol:  "TCP", SourcePort: 44916, DestinationPort: 80, Verdict: "DROPPED", DropReason: "POLICY_DENIED", Direction: "TRAFFIC_DIRECTION_UNKNOWN",
		}
		diff(t, got, want)
	})
	t.Run("icmp between reserved identities", func(t *testing.T) {
		got := decode(t, p, icmp[0].GetFlow(), "kind", time.Time{})
		if got.L4Protocol != "ICMPv4" || got.Source.Workload != "host" || got.Source.WorkloadKind != "reserved" ||
			got.Destination.Workload != "health" || got.Direction != "INGRESS" || got.IsReply {
			t.Errorf("icmp: %+v", got)
		}
	})
}

func TestParseIncomplete(t *testing.T) {
	fallback := testtime.Day.Add(3*time.Hour + 4*time.Minute + 5*time.Second)
	f := &flowpb.Flow{
		Verdict:          flowpb.Verdict(99),
		TrafficDirection: flowpb.TrafficDirection(77),
		DropReasonDesc:   flowpb.DropReason(9999),
		NodeName:         "c1/n1",
		L7:               &flowpb.Layer7{Type: flowpb.L7FlowType(42), LatencyNs: 1 << 63},
		Destination:      &flowpb.Endpoint{Labels: []string{"noprefix", "k8s:", ":"}},
	}
	got := decode(t, NewParser(nil), f, "c1", fallback)
	want := pipeline.Flow{M: pipeline.Meta{Time: fallback, Cluster: "c1", Node: "n1"}, Verdict: "99", Direction: "77", L7Latency: 1<<63 - 1}
	diff(t, got, want)

	f = &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED, DropReason: 181, Time: timestamppb.New(fallback)}
	if got := decode(t, NewParser(nil), f, "c1", time.Time{}); got.DropReason != "POLICY_DENY" || !got.M.Time.Equal(fallback) {
		t.Errorf("legacy drop reason: %q at %v", got.DropReason, got.M.Time)
	}
}

func TestWorkloadFromPod(t *testing.T) {
	for pod, want := range map[string][2]string{
		"productpage-v1-6b746f74dc-9rcxx": {"productpage-v1", "Deployment"},
		"node-local-dns-88zrp":            {"node-local-dns", ""},
		"xwing":                           {"xwing", ""},
		"web-0":                           {"web-0", ""},
		"api-v1-abcde":                    {"api-v1-abcde", ""}, // vowels: not generated
		"-":                               {"-", ""},
	} {
		if n, k := workloadFromPod(pod); n != want[0] || k != want[1] {
			t.Errorf("%s: got %s/%s, want %s/%s", pod, n, k, want[0], want[1])
		}
	}
}

func diff(t *testing.T, got, want pipeline.Flow) {
	t.Helper()
	if !got.M.Time.Equal(want.M.Time) {
		t.Errorf("time %v, want %v", got.M.Time, want.M.Time)
	}
	got.M.Time, want.M.Time = time.Time{}, time.Time{}
	if g, w := dump(got), dump(want); g != w {
		t.Errorf("\n got %s\nwant %s", g, w)
	}
}

func dump(f pipeline.Flow) string { return fmt.Sprintf("%+v", f) }

// decode runs one flow through the collector's decoder, from its wire form.
func decode(t testing.TB, p *Parser, f *flowpb.Flow, cluster string, fallback time.Time) pipeline.Flow {
	t.Helper()
	b, err := proto.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var r pipeline.Flow
	if _, err := newDecoder(p).flow(b, cluster, fallback, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// FuzzParse feeds the decoder any wire-format flow: it must never panic, and whatever
// the standard protobuf code reads, the decoder must read to the same record and flow
// facts as the mapping before it (refParse).
func FuzzParse(f *testing.F) {
	for _, name := range []string{"hubble-otel-basic-sample-10-flows.json", "hubble-otel-basic-sample-5-http-flows.json",
		"cilium-docs-export-dropped-policy-denied.json", "hubble-otel-basic-sample-400-icmpv4-flows.json"} {
		for _, r := range load(f, name) {
			b, err := proto.Marshal(r.GetFlow())
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	// A cluster mesh's flow: the server in another cluster, named by cluster_name and by
	// the label, a client named by the label alone.
	mesh, err := proto.Marshal(&flowpb.Flow{
		Source:      &flowpb.Endpoint{Namespace: "shop", Labels: []string{"k8s:app=web", "k8s:" + clusterLabelKey + "=ny"}},
		Destination: &flowpb.Endpoint{Namespace: "shop", ClusterName: "nbg", Labels: []string{"k8s:app=db", "k8s:" + clusterLabelKey + "=old"}},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mesh)
	p := NewParser(nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		var got pipeline.Flow
		info, err := newDecoder(p).flow(b, "fuzz", time.Unix(1, 0), &got)
		fl := &flowpb.Flow{}
		if proto.Unmarshal(b, fl) != nil {
			return // invalid for the standard code; the decoder may read or refuse it
		}
		if err != nil {
			t.Fatalf("decoder refused a flow the standard code reads: %v", err)
		}
		want := refParse(p, fl, "fuzz", time.Unix(1, 0))
		if dump(got) != dump(want) || !got.M.Time.Equal(want.M.Time) {
			t.Fatalf("\n got %s\nwant %s", dump(got), dump(want))
		}
		if info != refInfo(fl) {
			t.Fatalf("flow facts %+v, want %+v", info, refInfo(fl))
		}
		orient(&got, "fuzz")
	})
}

// TestEndpointCluster: an endpoint's cluster is Cilium's cluster_name, else its
// io.cilium.k8s.policy.cluster label (the samples' Cilium sends only the label); a
// reserved identity has none. The label is not kept among the endpoint's labels.
func TestEndpointCluster(t *testing.T) {
	p := NewParser(nil)
	f := flowAt(t, load(t, "hubble-otel-basic-sample-348-http-flows.json"), "2021-10-04T14:28:38.735173594Z")
	if src, dst := p.endpoint(f.GetSource(), nil), p.endpoint(f.GetDestination(), nil); src.Cluster != "default" || dst.Cluster != "" || dst.Workload != "world" {
		t.Errorf("prometheus -> world: source cluster %q, destination %q (%s)", src.Cluster, dst.Cluster, dst.Workload)
	}
	for _, c := range []struct {
		e    *flowpb.Endpoint
		want string
	}{
		{&flowpb.Endpoint{Labels: []string{"k8s:" + clusterLabelKey + "=nbg-aegis", "k8s:app=db"}}, "nbg-aegis"},
		{&flowpb.Endpoint{ClusterName: "nbg-aegis", Labels: []string{"k8s:" + clusterLabelKey + "=old"}}, "nbg-aegis"},
		{&flowpb.Endpoint{Labels: []string{clusterLabelKey + "=bare"}}, "bare"},
		{&flowpb.Endpoint{Labels: []string{"reserved:world"}}, ""},
	} {
		got := p.endpoint(c.e, nil)
		if got.Cluster != c.want || slices.ContainsFunc(got.Labels, func(l string) bool { return strings.Contains(l, clusterLabelKey) }) {
			t.Errorf("%v: cluster %q, labels %v; want %q", c.e.GetLabels(), got.Cluster, got.Labels, c.want)
		}
	}
}

// TestEndpointOwnerFromAPI: with no app label and no Cilium workload, the owner the
// cluster's API lists names the endpoint; the pod-name heuristic is the fallback, and a
// decoder re-derives remembered endpoints when the inventory changes.
func TestEndpointOwnerFromAPI(t *testing.T) {
	inv := inventory.Static(&inventory.Inventory{})
	e := &flowpb.Endpoint{Namespace: "shop", PodName: "web-0", Labels: []string{"k8s:tier=db"}}
	b, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(NewParser(nil))
	d.follow(inv.Snapshot(), "edge")
	got, err := d.endpoint(b)
	if err != nil || got.Workload != "web-0" || got.WorkloadKind != "" {
		t.Fatalf("before the API lists it: %+v %v (want the heuristic's web-0)", got, err)
	}
	if err := inv.Set(inventory.SourceYAML, inventory.Inventory{Workloads: []inventory.Workload{{Cluster: "edge", Namespace: "shop", Name: "web", Kind: "StatefulSet"}}}); err != nil {
		t.Fatal(err)
	}
	d.follow(inv.Snapshot(), "edge")
	if got, _ := d.endpoint(b); got.Workload != "web" || got.WorkloadKind != "StatefulSet" {
		t.Fatalf("owner from the API: %+v", got)
	}
	d.follow(inv.Snapshot(), "other-cluster")
	if got, _ := d.endpoint(b); got.Workload != "web" {
		t.Fatalf("the same snapshot is not followed again: %+v", got)
	}
	p := NewParser(nil)
	e.Labels = append(e.Labels, "k8s:app=db")
	if got := p.endpoint(e, func(string, string) (string, string, bool) { return "web", "StatefulSet", true }); got.Workload != "db" {
		t.Fatalf("the app label names the edge before the owner: %+v", got)
	}
}
