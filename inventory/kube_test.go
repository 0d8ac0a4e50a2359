package inventory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gopkg.in/yaml.v3"

	"github.com/meridianhq/meridian/internal/kubetest"
	"github.com/meridianhq/meridian/internal/wait"
)

// followBound is the longest a change made in the API may take to reach the inventory
// in these tests (measured: see the log lines "followed in").
const followBound = 5 * time.Second

// syncLog is a log the test can read while the sources write to it.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *syncLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func startLive(t *testing.T, cfg Config) (*Live, *syncLog) {
	t.Helper()
	logs := &syncLog{}
	l, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(logs, nil)), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), l) })
	return l, logs
}

// follow waits until cond holds on the current snapshot and logs how long it took.
func follow(t *testing.T, l *Live, what string, cond func(*Snapshot) error) time.Duration {
	t.Helper()
	start := time.Now()
	changes, cancel := l.Subscribe()
	defer cancel()
	deadline := time.After(followBound)
	for err := cond(l.Snapshot()); err != nil; err = cond(l.Snapshot()) {
		select {
		case <-changes:
		case <-deadline:
			t.Fatalf("%s: not within %v: %v", what, followBound, err)
		}
	}
	took := time.Since(start)
	t.Logf("%s: followed in %v", what, took.Round(time.Millisecond))
	return took
}

func node(name string, labels, annotations map[string]any, podCIDR string) map[string]any {
	md := map[string]any{"name": name}
	if labels != nil {
		md["labels"] = labels
	}
	if annotations != nil {
		md["annotations"] = annotations
	}
	n := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": md}
	if podCIDR != "" {
		n["spec"] = map[string]any{"podCIDR": podCIDR, "podCIDRs": []any{podCIDR}}
	}
	return n
}

func karmadaCRD(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("../testdata/karmada/cluster.karmada.io_clusters.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	return crd
}

func karmadaObj(name string, spec map[string]any) map[string]any {
	spec["syncMode"] = "Push"
	return map[string]any{"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster", "metadata": map[string]any{"name": name}, "spec": spec}
}

func apply(t *testing.T, s *kubetest.Server, obj map[string]any, ns string) {
	t.Helper()
	if err := s.Apply(obj, ns); err != nil {
		t.Fatal(err)
	}
}

// TestKubernetesAndKarmada runs the sources against a real kube-apiserver and etcd:
// Nodes and Karmada Clusters created, labelled, annotated and deleted, workloads listed,
// bad annotations refused with the last good reading kept, an API outage survived, and
// a token bound to no role refused and reported.
func TestKubernetesAndKarmada(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	defer func(d time.Duration) { healthEvery = d }(healthEvery)
	healthEvery = 500 * time.Millisecond
	api := kubetest.Start(t)
	api.Discover(t)
	api.InstallCRD(t, karmadaCRD(t))
	kc := api.Kubeconfig(t)
	l, logs := startLive(t, Config{
		Kubernetes: []KubernetesSource{{Cluster: "edge", Kubeconfig: kc, Site: "paris"}},
		Karmada:    KarmadaSource{Kubeconfig: kc}, Debounce: 50 * time.Millisecond,
	})
	must(t, l.Set(SourceYAML, Inventory{Sites: []Site{{Name: "paris", Lat: 48.86, Lon: 2.35}}}))
	var took []time.Duration

	// Created with labels and annotations.
	apply(t, api, node("edge-1", map[string]any{"topology.kubernetes.io/zone": "paris-a", "topology.kubernetes.io/region": "europe"},
		map[string]any{DefaultWireGuardKeyAnnotation: keyA, DefaultLocationAnnotation: "48.85,2.29"}, "10.8.1.0/24"), "")
	took = append(took, follow(t, l, "node created", func(s *Snapshot) error {
		n, ok := s.NodeByWireGuardKey(keyA)
		if !ok || n.Name != "edge-1" || n.Site != "paris-a" || n.Cluster != "edge" {
			return fmt.Errorf("node by key: %+v %v", n, ok)
		}
		if p, ok := s.NodeByPodIP(mustAddr("10.8.1.9")); !ok || p.Name != "edge-1" {
			return errors.New("pod IP not mapped")
		}
		if st, _ := s.Site("paris-a"); st.Region != "europe" || st.Lat != 48.85 {
			return fmt.Errorf("site from labels and annotation: %+v", st)
		}
		return nil
	}))
	// A node with no site label falls back to a rook label, then to the source's site.
	apply(t, api, node("vault-1", map[string]any{"topology.rook.io/datacenter": "nyc-dc1"}, nil, ""), "")
	apply(t, api, node("bare-1", nil, nil, ""), "")
	took = append(took, follow(t, l, "fallback labels", func(s *Snapshot) error {
		if n, _ := s.Node("vault-1"); n.Site != "nyc-dc1" {
			return fmt.Errorf("vault-1 at %q", n.Site)
		}
		if n, _ := s.Node("bare-1"); n.Site != "paris" {
			return fmt.Errorf("bare-1 at %q", n.Site)
		}
		return nil
	}))
	// Re-labelled: it moves.
	apply(t, api, node("edge-1", map[string]any{"topology.kubernetes.io/zone": "paris-b", "topology.kubernetes.io/region": "europe"},
		map[string]any{DefaultWireGuardKeyAnnotation: keyA}, "10.8.1.0/24"), "")
	took = append(took, follow(t, l, "node re-labelled", func(s *Snapshot) error {
		if n, _ := s.Node("edge-1"); n.Site != "paris-b" {
			return fmt.Errorf("edge-1 at %q", n.Site)
		}
		return nil
	}))
	// Annotated with a key that is not a WireGuard key: refused, counted, last good kept.
	errs := l.metrics.errors.WithLabelValues("kubernetes/edge", "node", "invalid")
	apply(t, api, node("edge-1", map[string]any{"topology.kubernetes.io/zone": "paris-c"},
		map[string]any{DefaultWireGuardKeyAnnotation: "not-a-key"}, "10.8.1.0/24"), "")
	wait.For(t, followBound, "bad key counted", func() error {
		if testutil.ToFloat64(errs) < 1 {
			return errors.New("not counted")
		}
		return nil
	})
	if !strings.Contains(logs.String(), `node \"edge-1\": annotation kilo.squat.ai/key: \"not-a-key\" is not a WireGuard public key`) {
		t.Fatalf("the error does not name the node and annotation:\n%s", logs)
	}
	if n, _ := l.Snapshot().Node("edge-1"); n.Site != "paris-b" || n.WireGuardKey != keyA {
		t.Fatalf("last good reading not kept: %+v", n)
	}
	// A malformed location annotation: same.
	apply(t, api, node("bare-1", nil, map[string]any{DefaultLocationAnnotation: "north"}, ""), "")
	wait.For(t, followBound, "bad location counted", func() error {
		if !strings.Contains(logs.String(), `node \"bare-1\": annotation meridian.dev/location: \"north\" is not`) {
			return errors.New("not logged")
		}
		return nil
	})
	// Deleted: gone.
	if err := api.Delete(node("vault-1", nil, nil, ""), ""); err != nil {
		t.Fatal(err)
	}
	took = append(took, follow(t, l, "node deleted", func(s *Snapshot) error {
		if _, ok := s.Node("vault-1"); ok {
			return errors.New("still there")
		}
		return nil
	}))

	// Karmada member clusters.
	apply(t, api, karmadaObj("member-tokyo", map[string]any{"region": "asia", "zones": []any{"tokyo-1"}, "provider": "bare-metal"}), "")
	apply(t, api, karmadaObj("member-us", map[string]any{"region": "us-east", "zones": []any{"us-east-1a", "us-east-1b"}}), "")
	took = append(took, follow(t, l, "Karmada clusters created", func(s *Snapshot) error {
		c, ok := s.Cluster("member-tokyo")
		if !ok || c.Region != "asia" || c.Site != "tokyo-1" || c.Provider != "bare-metal" {
			return fmt.Errorf("member-tokyo: %+v", c)
		}
		if c, _ := s.Cluster("member-us"); c.Site != "" || len(c.Zones) != 2 {
			return fmt.Errorf("member-us: %+v", c)
		}
		return nil
	}))
	apply(t, api, karmadaObj("member-tokyo", map[string]any{"region": "asia-northeast", "zones": []any{"tokyo-2"}}), "")
	took = append(took, follow(t, l, "Karmada cluster moved", func(s *Snapshot) error {
		if c, _ := s.Cluster("member-tokyo"); c.Region != "asia-northeast" || c.Site != "tokyo-2" {
			return fmt.Errorf("member-tokyo: %+v", c)
		}
		return nil
	}))
	if err := api.Delete(karmadaObj("member-us", map[string]any{}), ""); err != nil {
		t.Fatal(err)
	}
	took = append(took, follow(t, l, "Karmada cluster deleted", func(s *Snapshot) error {
		if _, ok := s.Cluster("member-us"); ok {
			return errors.New("still there")
		}
		return nil
	}))

	// Workloads: owners from the API.
	apply(t, api, map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "shop"}}, "")
	tmpl := map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "x"}},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "registry.invalid/x"}}}}
	sel := map[string]any{"matchLabels": map[string]any{"app": "x"}}
	apply(t, api, map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "api-v2"},
		"spec": map[string]any{"selector": sel, "template": tmpl}}, "shop")
	apply(t, api, map[string]any{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": map[string]any{"name": "web"},
		"spec": map[string]any{"selector": sel, "template": tmpl, "serviceName": "web"}}, "shop")
	took = append(took, follow(t, l, "workloads listed", func(s *Snapshot) error {
		if w, ok := s.WorkloadOfPod("edge", "shop", "web-3"); !ok || w.Kind != "StatefulSet" {
			return fmt.Errorf("web-3: %+v", w)
		}
		if w, ok := s.WorkloadOfPod("edge", "shop", "api-v2-6d4cf56db6-x7k2p"); !ok || w.Name != "api-v2" {
			return fmt.Errorf("api-v2 pod: %+v", w)
		}
		if !s.HasNamespace("edge", "shop") {
			return errors.New("namespace shop not listed")
		}
		return nil
	}))

	// An API outage keeps the last inventory; changes flow again once it is back.
	before := l.Snapshot()
	unreachable := l.metrics.errors.WithLabelValues("kubernetes/edge", "apiserver", "unreachable")
	api.StopAPI()
	wait.For(t, 30*time.Second, "outage counted", func() error {
		if testutil.ToFloat64(unreachable) < 1 {
			return fmt.Errorf("not counted yet; log:\n%s", logs)
		}
		return nil
	})
	if s := l.Snapshot(); len(s.Inventory().Nodes) != len(before.Inventory().Nodes) {
		t.Fatalf("outage changed the inventory: %d nodes, had %d", len(s.Inventory().Nodes), len(before.Inventory().Nodes))
	}
	if n, ok := l.Snapshot().NodeByWireGuardKey(keyA); !ok || n.Name != "edge-1" {
		t.Fatal("outage lost a node")
	}
	if !strings.Contains(logs.String(), "kubernetes/edge: API server:") {
		t.Fatalf("outage not logged with its source:\n%s", logs)
	}
	api.StartAPI(t)
	apply(t, api, node("edge-2", map[string]any{"topology.kubernetes.io/zone": "paris-a"}, map[string]any{DefaultWireGuardKeyAnnotation: keyB}, ""), "")
	start := time.Now()
	wait.For(t, 60*time.Second, "a change after the outage", func() error {
		if _, ok := l.Snapshot().NodeByWireGuardKey(keyB); !ok {
			return errors.New("edge-2 not seen")
		}
		return nil
	})
	t.Logf("first change after the API came back: followed in %v (includes the informer's re-list back-off)", time.Since(start).Round(time.Millisecond))
	var worst time.Duration
	for _, d := range took {
		worst = max(worst, d)
	}
	t.Logf("worst change-to-inventory time over %d changes: %v (bound %v)", len(took), worst.Round(time.Millisecond), followBound)
}

// TestRBACRefusal: a token no role grants anything is refused; the refusal is logged
// naming the resource, counted, and the inventory keeps what it had (the file's part).
func TestRBACRefusal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	api := kubetest.Start(t)
	l, logs := startLive(t, Config{
		Kubernetes: []KubernetesSource{{Cluster: "edge", Kubeconfig: api.KubeconfigFor(t, api.NoRoleToken)}}, Debounce: time.Millisecond,
	})
	must(t, l.Set(SourceYAML, Inventory{Nodes: []Node{{Name: "from-file", WireGuardKey: keyA}}}))
	forbidden := l.metrics.errors.WithLabelValues("kubernetes/edge", "nodes", "forbidden")
	wait.For(t, 30*time.Second, "refusal counted", func() error {
		if testutil.ToFloat64(forbidden) < 1 {
			return errors.New("not counted")
		}
		return nil
	})
	if !strings.Contains(logs.String(), `nodes is forbidden: User \"meridian-nobody\" cannot list resource \"nodes\"`) {
		t.Fatalf("refusal not logged with the resource:\n%s", logs)
	}
	if n, ok := l.Snapshot().NodeByWireGuardKey(keyA); !ok || n.Name != "from-file" {
		t.Fatal("the file's inventory was lost")
	}
}
