package lab

import (
	"context"
	"fmt"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meridianhq/meridian/collectors/hubble/hubbletest"
)

// relay replays real flows into one cluster's Hubble Relay, with times shifted to now and
// the node names of that cluster. Like a real relay it keeps a bounded ring of the latest
// flows (hubbletest.DefaultCapacity), not every flow it ever replayed.
type relay struct {
	cluster string
	srv     *hubbletest.Server
	// impaired reports a failure beneath the cluster's workloads (see impairs).
	impaired func() bool
	mesh     *meshCall // nil: the cluster is at neither end of a call across the mesh
}

// meshCall is a service a client cluster also calls in another cluster of the mesh: each
// of the capture's exchanges with pods named pod* is made again with the server cluster's
// replica. Both relays report it, as Cilium's do: the client's as it leaves (egress), the
// server's as it comes in (ingress).
type meshCall struct {
	client, server, pod string
	impaired            func() bool // the tunnels between the two clusters' sites are down
}

// meshCalls is the lab's cluster mesh: New York's compute cluster also calls the
// capture's productpage in Nuremberg, over the New York–Nuremberg tunnels, so a failed
// tunnel between them shows as erring flows between the two clusters.
var meshCalls = []meshCall{{client: "ny-destroyer", server: "nbg-aegis", pod: "productpage-"}}

// flowsPerSecond is each lab relay's replay rate.
const flowsPerSecond = 50

func (l *Lab) startRelays(ctx context.Context, samples []*observer.GetFlowsResponse) error {
	samples = succeeded(samples)
	if len(samples) == 0 {
		return fmt.Errorf("lab: the Hubble capture has no successful exchange to replay")
	}
	cephSites, clusterSite := map[string]bool{}, map[string]string{}
	for _, c := range l.inv.Clusters {
		clusterSite[c.Name] = c.Site
	}
	for _, n := range l.inv.Nodes {
		if n.CephHost != "" {
			cephSites[n.Site] = true
		}
	}
	for _, c := range l.inv.Clusters {
		if c.Name == "ny-vault" { // storage nodes run no workloads
			continue
		}
		srv := hubbletest.NewServer(nil).WithCapacity(hubbletest.DefaultCapacity)
		if err := srv.Start(); err != nil {
			return fmt.Errorf("lab: relay %s: %w", c.Name, err)
		}
		r := &relay{cluster: c.Name, srv: srv, impaired: func() bool { return l.state.impairs(c.Site, cephSites[c.Site]) }}
		for _, mc := range meshCalls {
			if mc.client == c.Name || mc.server == c.Name {
				mc.impaired = func() bool { return l.state.tunnelDown(clusterSite[mc.client], clusterSite[mc.server]) }
				r.mesh = &mc
			}
		}
		l.relays = append(l.relays, r)
		go r.replay(ctx, samples)
	}
	return nil
}

func (r *relay) replay(ctx context.Context, samples []*observer.GetFlowsResponse) {
	defer r.srv.Stop()
	tick := time.NewTicker(time.Second / flowsPerSecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			sample := samples[i%len(samples)]
			r.srv.Add(r.flow(sample, now, r.cluster, r.cluster, r.impaired()))
			if m := r.meshFlow(sample, now); m != nil {
				r.srv.Add(m)
			}
		}
	}
}

// meshFlow is sample made again across the mesh, as this relay sees it, or nil: the
// client's relay sees it fail (503) while the tunnels between the sites are down, the
// server's does not see it then (it never arrived).
func (r *relay) meshFlow(sample *observer.GetFlowsResponse, now time.Time) *observer.GetFlowsResponse {
	mc := r.mesh
	if mc == nil || !strings.HasPrefix(serverOf(sample.GetFlow()).GetPodName(), mc.pod) {
		return nil
	}
	impaired := mc.impaired()
	if impaired && r.cluster == mc.server {
		return nil
	}
	return r.flow(sample, now, mc.client, mc.server, impaired)
}

// flow is sample as this relay reports it at now: its client's pod in cluster client, its
// server's in server (Cilium's cluster label, which a mesh's relay gives remote pods too),
// and a failed answer (503) when impaired.
func (r *relay) flow(sample *observer.GetFlowsResponse, now time.Time, client, server string, impaired bool) *observer.GetFlowsResponse {
	m := proto.Clone(sample).(*observer.GetFlowsResponse)
	ts := timestamppb.New(now)
	m.Time = ts
	node := r.cluster + "-node-1"
	m.NodeName = node
	f := m.GetFlow()
	if f == nil {
		return m
	}
	f.Time = ts
	f.NodeName = node
	srv := serverOf(f)
	for _, e := range []*flowpb.Endpoint{f.GetSource(), f.GetDestination()} {
		if e.GetPodName() == "" {
			continue // a reserved identity (world, host, ...) is in no cluster
		}
		cluster := client
		if e == srv {
			cluster = server
		}
		labelled := false
		for i, l := range e.Labels {
			if strings.HasPrefix(l, clusterLabel) {
				e.Labels[i], labelled = clusterLabel+cluster, true
			}
		}
		if !labelled { // the capture's sidecar answers carry no labels of their pod
			e.Labels = append(e.Labels, clusterLabel+cluster)
		}
	}
	if http := f.GetL7().GetHttp(); http != nil && f.GetL7().GetType() == flowpb.L7FlowType_RESPONSE && impaired {
		http.Code = 503 // the request timed out on the failure beneath
	}
	return m
}

// clusterLabel is the label in which Cilium names a pod's cluster.
const clusterLabel = "k8s:io.cilium.k8s.policy.cluster="

// serverOf is the endpoint that answers in f's exchange: a reply comes from it.
func serverOf(f *flowpb.Flow) *flowpb.Endpoint {
	if f.GetIsReply().GetValue() {
		return f.GetSource()
	}
	return f.GetDestination()
}

// healthyLatency is the longest answer a healthy exchange takes: the service latency SLO's
// threshold (alerts/slos/service.yaml).
const healthyLatency = 500 * time.Millisecond

// succeeded keeps the flows of the capture's healthy exchanges. The capture (hubble-otel's
// 348 HTTP flows) comes from a sick mesh: its sidecars answered 151 of 173 requests with
// 503, and one of the two productpage answers took 3 s. Replayed as the calm world, it
// burnt every service's error and latency SLOs, fired about 140 alerts and painted every
// site degraded. A healthy world replays only the exchanges answered without error within
// healthyLatency; a sick exchange is dropped with its request (same connection, reversed).
func succeeded(samples []*observer.GetFlowsResponse) []*observer.GetFlowsResponse {
	// HTTP/1.1 answers in request order on a connection: the k-th answer on a connection
	// is to the k-th request on it.
	pending := map[string][]int{} // connection "client>server" -> indexes of unanswered requests
	drop := map[int]bool{}
	for i, m := range samples {
		f := m.GetFlow()
		l7 := f.GetL7()
		switch l7.GetType() {
		case flowpb.L7FlowType_REQUEST:
			c := endpoint(f, true) + ">" + endpoint(f, false)
			pending[c] = append(pending[c], i)
		case flowpb.L7FlowType_RESPONSE:
			c := endpoint(f, false) + ">" + endpoint(f, true)
			req := -1
			if q := pending[c]; len(q) > 0 {
				req, pending[c] = q[0], q[1:]
			}
			if l7.GetHttp().GetCode() >= 500 || l7.GetDns().GetRcode() != 0 || l7.GetLatencyNs() > uint64(healthyLatency) {
				drop[i], drop[req] = true, true
			}
		}
	}
	var out []*observer.GetFlowsResponse
	for i, m := range samples {
		if !drop[i] {
			out = append(out, m)
		}
	}
	return out
}

// endpoint is a flow's source (or destination) address and TCP or UDP port.
func endpoint(f *flowpb.Flow, source bool) string {
	ip, tcp, udp := f.GetIP().GetDestination(), f.GetL4().GetTCP(), f.GetL4().GetUDP()
	port := tcp.GetDestinationPort() + udp.GetDestinationPort()
	if source {
		ip, port = f.GetIP().GetSource(), tcp.GetSourcePort()+udp.GetSourcePort()
	}
	return fmt.Sprintf("%s:%d", ip, port)
}
