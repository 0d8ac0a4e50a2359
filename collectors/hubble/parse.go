package hubble

import (
	"cmp"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/meridianhq/meridian/pipeline"
)

// DefaultLabelKeys are the endpoint labels kept on Flow records: the ones that name an
// application. Cilium's own bookkeeping labels (policy cluster, service account,
// namespace labels) are dropped; reserved identities (world, host, ...) are always kept.
var DefaultLabelKeys = []string{"app", "version", "k8s-app", "app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/version"}

// clusterLabelKey is the label Cilium gives every pod endpoint, remote ones of a cluster
// mesh included: the name of the cluster the pod runs in.
const clusterLabelKey = "io.cilium.k8s.policy.cluster"

// appLabelKeys name the application an endpoint belongs to, most specific first.
var appLabelKeys = []string{"app.kubernetes.io/name", "app", "k8s-app"}

// Parser maps Hubble endpoints to the workloads and labels a Flow record stores. It is
// a pure function of its input; the decoder (wire.go) reads the rest of a flow.
type Parser struct {
	labelKeys map[string]bool
}

// NewParser keeps the given label keys on endpoints (nil: DefaultLabelKeys).
func NewParser(labelKeys []string) *Parser {
	if labelKeys == nil {
		labelKeys = DefaultLabelKeys
	}
	p := &Parser{labelKeys: make(map[string]bool, len(labelKeys))}
	for _, k := range labelKeys {
		p.labelKeys[k] = true
	}
	return p
}

// Owners names a pod's owner as the cluster's API lists it (inventory.Snapshot's
// WorkloadOfPod); ok false: not listed.
type Owners func(namespace, pod string) (name, kind string, ok bool)

// endpoint maps e; owners (nil: none) is asked before the pod-name heuristic.
func (p *Parser) endpoint(e *flowpb.Endpoint, owners Owners) pipeline.Endpoint {
	if e == nil {
		return pipeline.Endpoint{}
	}
	out := pipeline.Endpoint{Namespace: e.GetNamespace(), Pod: e.GetPodName(), Identity: e.GetIdentity(), Cluster: e.GetClusterName()}
	app, appRank, reserved, podNamespace, clusterLabel := "", len(appLabelKeys), "", "", ""
	for _, l := range e.GetLabels() {
		source, kv, ok := strings.Cut(l, ":")
		if !ok {
			source, kv = "", l
		}
		if source == "reserved" {
			if reserved == "" {
				reserved = kv
			}
			out.Labels = append(out.Labels, l)
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "io.kubernetes.pod.namespace":
			podNamespace = v
		case clusterLabelKey:
			clusterLabel = v
		}
		if p.labelKeys[k] {
			out.Labels = append(out.Labels, kv)
		}
		if r := slices.Index(appLabelKeys, k); r >= 0 && r < appRank {
			app, appRank = v, r
		}
	}
	// The app label names an edge, as in Hubble UI's service map: it is set on every pod
	// of an application (reviews v1, v2 and v3 are one "reviews") and survives Cilium
	// versions that do not send workloads. Then Cilium's workload, then the owner the
	// API lists (a StatefulSet's pods carry no hash to cut), then the owner read from the
	// pod name, then the reserved identity (world, host, ...).
	var owner, kind string
	if ws := e.GetWorkloads(); len(ws) > 0 {
		owner, kind = ws[0].GetName(), ws[0].GetKind()
	} else if out.Pod != "" {
		ok := false
		if owners != nil {
			owner, kind, ok = owners(cmp.Or(out.Namespace, podNamespace), out.Pod)
		}
		if !ok {
			owner, kind = workloadFromPod(out.Pod)
		}
	}
	switch {
	case app != "":
		out.Workload, out.WorkloadKind = app, kind
	case owner != "":
		out.Workload, out.WorkloadKind = owner, kind
	case reserved != "":
		out.Workload, out.WorkloadKind = reserved, "reserved"
	}
	if out.Namespace == "" {
		out.Namespace = podNamespace
	}
	if out.Cluster == "" { // older Cilium names it in the label only
		out.Cluster = clusterLabel
	}
	return out
}

// workloadFromPod strips the generated suffixes Kubernetes adds to pod names:
// <deployment>-<replicaset hash>-<5> is a Deployment; <owner>-<5> is a DaemonSet, Job or
// bare ReplicaSet (kind unknown). Both suffixes use Kubernetes' rand alphabet, which has
// no vowels, so ordinary name parts like "v1" or "api" are left alone.
func workloadFromPod(pod string) (name, kind string) {
	i := strings.LastIndexByte(pod, '-')
	if i <= 0 || len(pod)-i-1 != 5 || !randSuffix(pod[i+1:]) {
		return pod, ""
	}
	owner := pod[:i]
	j := strings.LastIndexByte(owner, '-')
	if j > 0 && len(owner)-j-1 >= 6 && len(owner)-j-1 <= 10 && randSuffix(owner[j+1:]) {
		return owner[:j], "Deployment"
	}
	return owner, ""
}

// randSuffix reports whether s uses only k8s.io/apimachinery/pkg/util/rand's alphabet.
func randSuffix(s string) bool {
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune("bcdfghjklmnpqrstvwxz2456789", rune(s[i])) {
			return false
		}
	}
	return true
}

// nodeName drops the "cluster/" prefix Hubble Relay puts on node names.
func nodeName(n string) string {
	if i := strings.LastIndexByte(n, '/'); i >= 0 {
		return n[i+1:]
	}
	return n
}

// urlPath keeps the path of an HTTP URL: hosts and query strings add cardinality and may
// hold secrets.
func urlPath(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
		if j := strings.IndexByte(u, '/'); j >= 0 {
			u = u[j:]
		} else {
			u = "/"
		}
	}
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	return u
}

func port(p uint32) uint16 { return uint16(min(p, 0xffff)) }
