package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Deps are what the live inventory needs from its host.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// KarmadaClusters is the resource Karmada serves its member clusters as.
var KarmadaClusters = schema.GroupVersionResource{Group: "cluster.karmada.io", Version: "v1alpha1", Resource: "clusters"}

var (
	deployments  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	statefulsets = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
	namespaces   = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// New returns the live inventory of cfg's sources; its service watches the APIs (client-go
// informers) from start to stop. Set the YAML part with Set(SourceYAML, ...). An API
// that cannot be reached or refuses access is retried with back-off, counted and logged;
// what was last read from it stays in the inventory.
func New(cfg Config, deps Deps) (*Live, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l, err := NewLive(deps.Logger, deps.Registerer, cfg.Sources()...)
	if err != nil {
		return nil, err
	}
	var runs []func(context.Context)
	for i, k := range cfg.Kubernetes {
		rc, err := restConfig(k.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("inventory_sources.kubernetes[%d].kubeconfig: %w", i, err)
		}
		s, err := newKubeSource(l, k.withDefaults(), rc, cfg.Debounce)
		if err != nil {
			return nil, fmt.Errorf("inventory_sources.kubernetes[%d]: %w", i, err)
		}
		runs = append(runs, s.run)
	}
	if cfg.Karmada.Kubeconfig != "" {
		rc, err := restConfig(cfg.Karmada.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("inventory_sources.karmada.kubeconfig: %w", err)
		}
		s, err := newKarmadaSource(l, rc, cfg.Debounce)
		if err != nil {
			return nil, fmt.Errorf("inventory_sources.karmada: %w", err)
		}
		runs = append(runs, s.run)
	}
	l.Service = services.NewBasicService(nil, func(ctx context.Context) error {
		var wg sync.WaitGroup
		for _, run := range runs {
			wg.Go(func() { run(ctx) })
		}
		<-ctx.Done() // with no API source too: a finished service would stop the process
		wg.Wait()
		return nil
	}, nil).WithName("inventory")
	return l, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

// publisher gathers a source's changes for the debounce time, then publishes its part.
type publisher struct {
	live     *Live
	name     string
	debounce time.Duration
	dirty    chan struct{}
}

func newPublisher(l *Live, name string, debounce time.Duration) publisher {
	return publisher{live: l, name: name, debounce: debounce, dirty: make(chan struct{}, 1)}
}

func (p *publisher) mark() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

func (p *publisher) loop(ctx context.Context, build func() Inventory) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.dirty:
		}
		if p.debounce > 0 {
			t := time.NewTimer(p.debounce)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		_ = p.live.Set(p.name, build()) // the name is one of the live inventory's sources
	}
}

// keyedSet is a source's last good reading of each object of one kind, by key. The
// source's lock guards it (build reads items under that lock); each change marks the
// source for publishing.
type keyedSet[K comparable, V any] struct {
	mu    *sync.Mutex
	mark  func()
	items map[K]V
}

func newKeyedSet[K comparable, V any](mu *sync.Mutex, mark func()) keyedSet[K, V] {
	return keyedSet[K, V]{mu: mu, mark: mark, items: map[K]V{}}
}

// put records v under k, or forgets k when the object is gone (present false).
func (s keyedSet[K, V]) put(k K, v V, present bool) {
	s.mu.Lock()
	if present {
		s.items[k] = v
	} else {
		delete(s.items, k)
	}
	s.mu.Unlock()
	s.mark()
}

// healthEvery is how often each API server's /readyz is asked: client-go retries a watch
// whose connection is refused silently, so an outage is seen by asking.
var healthEvery = 5 * time.Second

// health asks the API server's /readyz every healthEvery until ctx ends. Each failure is
// counted; the log says when the API goes away and when it comes back.
func (p *publisher) health(ctx context.Context, c rest.Interface) {
	up := true
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, healthEvery)
		err := c.Get().AbsPath("/readyz").Do(rctx).Error()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if up {
				p.live.sourceError(p.name, "apiserver", reason(err), fmt.Errorf("%s: API server: %w", p.name, err))
			} else if m := p.live.metrics; m != nil {
				m.errors.WithLabelValues(p.name, "apiserver", reason(err)).Inc()
			}
			up = false
		case !up:
			up = true
			p.live.log.Info("inventory source: API server back; watches resume", "source", p.name)
		}
		if m := p.live.metrics; m != nil {
			m.up.WithLabelValues(p.name).Set(map[bool]float64{true: 1}[up])
		}
	}
}

// watchErrors reports list and watch failures of one resource: the informer retries with
// back-off and keeps its objects, so the inventory keeps the last it read.
func (p *publisher) watchErrors(inf cache.SharedIndexInformer, kind string) {
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		p.live.sourceError(p.name, kind, reason(err), fmt.Errorf("%s: list/watch %s: %w", p.name, kind, err))
	})
}

func reason(err error) string {
	switch {
	case apierrors.IsForbidden(err):
		return "forbidden"
	case apierrors.IsUnauthorized(err):
		return "unauthorized"
	case apierrors.IsNotFound(err):
		return "not_served"
	case errors.Is(err, context.Canceled):
		return "stopped"
	case apierrors.ReasonForError(err) != metav1.StatusReasonUnknown:
		return "refused"
	default:
		return "unreachable"
	}
}

// kubeSource reads one cluster's Nodes, namespaces, Deployments and StatefulSets.
type kubeSource struct {
	publisher
	cfg    KubernetesSource
	client kubernetes.Interface
	meta   metadata.Interface

	mu         sync.Mutex
	nodes      keyedSet[string, kubeNode]
	namespaces keyedSet[string, struct{}]
	workloads  keyedSet[Workload, struct{}]
}

type kubeNode struct {
	node   Node
	region string
	geo    *[2]float64
}

func newKubeSource(l *Live, cfg KubernetesSource, rc *rest.Config, debounce time.Duration) (*kubeSource, error) {
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	m, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	s := &kubeSource{publisher: newPublisher(l, "kubernetes/"+cfg.Cluster, debounce), cfg: cfg, client: c, meta: m}
	s.nodes = newKeyedSet[string, kubeNode](&s.mu, s.mark)
	s.namespaces = newKeyedSet[string, struct{}](&s.mu, s.mark)
	s.workloads = newKeyedSet[Workload, struct{}](&s.mu, s.mark)
	return s, nil
}

func (s *kubeSource) run(ctx context.Context) {
	f := informers.NewSharedInformerFactory(s.client, 0)
	nodes := f.Core().V1().Nodes().Informer()
	s.watchErrors(nodes, "nodes")
	_, _ = nodes.AddEventHandler(handler(s.onNode, s.onNodeDelete))
	f.Start(ctx.Done())
	if *s.cfg.Workloads {
		mf := metadatainformer.NewSharedInformerFactory(s.meta, 0)
		for _, r := range []struct {
			gvr  schema.GroupVersionResource
			kind string
		}{{namespaces, "Namespace"}, {deployments, "Deployment"}, {statefulsets, "StatefulSet"}} {
			inf := mf.ForResource(r.gvr).Informer()
			s.watchErrors(inf, r.gvr.Resource)
			_, _ = inf.AddEventHandler(handler(func(o any) { s.onMeta(r.kind, o, true) }, func(o any) { s.onMeta(r.kind, o, false) }))
		}
		mf.Start(ctx.Done())
		defer mf.Shutdown()
	}
	defer f.Shutdown()
	go s.health(ctx, s.client.Discovery().RESTClient())
	s.loop(ctx, s.build)
}

// handler calls set for added and updated objects and del for deleted ones (also when
// the deletion was missed during a watch outage).
func handler(set, del func(any)) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, o any) { set(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			del(o)
		},
	}
}

func (s *kubeSource) onNode(o any) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	kn, err := s.node(n)
	if err != nil {
		// The Node's last good reading stays; one it never had leaves it out.
		s.live.sourceError(s.name, "node", "invalid", fmt.Errorf("%s: %w", s.name, err))
		return
	}
	s.nodes.put(n.Name, kn, true)
}

func (s *kubeSource) onNodeDelete(o any) {
	if n, ok := o.(*corev1.Node); ok {
		s.nodes.put(n.Name, kubeNode{}, false)
	}
}

// node reads one Node: its site and region from the first configured label it carries,
// its WireGuard key and location from annotations, its pod CIDRs from its spec.
func (s *kubeSource) node(n *corev1.Node) (kubeNode, error) {
	kn := kubeNode{node: Node{Name: n.Name, Cluster: s.cfg.Cluster, Site: s.cfg.Site}}
	if v, ok := firstLabel(n.Labels, s.cfg.SiteLabels); ok {
		kn.node.Site = v
	}
	kn.region, _ = firstLabel(n.Labels, s.cfg.RegionLabels)
	if k, ok := n.Annotations[s.cfg.WireGuardKeyAnnotation]; ok {
		if err := checkWireGuardKey(k); err != nil {
			return kn, fmt.Errorf("node %q: annotation %s: %w", n.Name, s.cfg.WireGuardKeyAnnotation, err)
		}
		kn.node.WireGuardKey = k
	}
	if v, ok := n.Annotations[s.cfg.LocationAnnotation]; ok {
		geo, err := parseLocation(v)
		if err != nil {
			return kn, fmt.Errorf("node %q: annotation %s: %w", n.Name, s.cfg.LocationAnnotation, err)
		}
		kn.geo = geo
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return kn, fmt.Errorf("node %q: spec.podCIDRs: %w", n.Name, err)
		}
		kn.node.PodCIDRs = append(kn.node.PodCIDRs, p)
	}
	return kn, nil
}

// firstLabel returns the value of the first key present with a non-empty value.
func firstLabel(labels map[string]string, keys []string) (string, bool) {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v, true
		}
	}
	return "", false
}

// parseLocation reads "lat,lon" in decimal degrees.
func parseLocation(v string) (*[2]float64, error) {
	a, b, ok := strings.Cut(v, ",")
	lat, err1 := strconv.ParseFloat(strings.TrimSpace(a), 64)
	lon, err2 := strconv.ParseFloat(strings.TrimSpace(b), 64)
	if !ok || err1 != nil || err2 != nil || math.Abs(lat) > 90 || math.Abs(lon) > 180 {
		return nil, fmt.Errorf("%q is not \"lat,lon\" in degrees (-90..90, -180..180)", v)
	}
	return &[2]float64{lat, lon}, nil
}

func (s *kubeSource) onMeta(kind string, o any, present bool) {
	m, ok := o.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	if kind == "Namespace" {
		s.namespaces.put(m.Name, struct{}{}, present)
	} else {
		s.workloads.put(Workload{Cluster: s.cfg.Cluster, Namespace: m.Namespace, Name: m.Name, Kind: kind}, struct{}{}, present)
	}
}

// build is the source's part: its cluster, its nodes, the sites they name (placed by a
// node's location annotation), its namespaces and workloads.
func (s *kubeSource) build() Inventory {
	s.mu.Lock()
	defer s.mu.Unlock()
	inv := Inventory{Clusters: []Cluster{{Name: s.cfg.Cluster, Site: s.cfg.Site}}, Nodes: make([]Node, 0, len(s.nodes.items))}
	sites := map[string]int{}
	for _, kn := range s.nodes.items {
		inv.Nodes = append(inv.Nodes, kn.node)
		if kn.node.Site == "" {
			continue
		}
		i, ok := sites[kn.node.Site]
		if !ok {
			i = len(inv.Sites)
			sites[kn.node.Site] = i
			inv.Sites = append(inv.Sites, Site{Name: kn.node.Site})
		}
		st := &inv.Sites[i]
		if st.Region == "" {
			st.Region = kn.region
		}
		if kn.geo != nil && st.Lat == 0 && st.Lon == 0 {
			st.Lat, st.Lon = kn.geo[0], kn.geo[1]
		}
	}
	// Sorted, so that snapshots do not depend on map order.
	slices.SortFunc(inv.Nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(inv.Sites, func(a, b Site) int { return strings.Compare(a.Name, b.Name) })
	for ns := range s.namespaces.items {
		inv.Namespaces = append(inv.Namespaces, Namespace{Cluster: s.cfg.Cluster, Name: ns})
	}
	for w := range s.workloads.items {
		inv.Workloads = append(inv.Workloads, w)
	}
	return inv
}

// karmadaSource reads a Karmada control plane's member Clusters.
type karmadaSource struct {
	publisher
	client dynamic.Interface
	rest   rest.Interface

	mu       sync.Mutex
	clusters keyedSet[string, Cluster]
}

func newKarmadaSource(l *Live, rc *rest.Config, debounce time.Duration) (*karmadaSource, error) {
	c, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	rc = rest.CopyConfig(rc)
	rc.GroupVersion, rc.NegotiatedSerializer = &schema.GroupVersion{}, scheme.Codecs.WithoutConversion()
	r, err := rest.UnversionedRESTClientFor(rc)
	if err != nil {
		return nil, err
	}
	s := &karmadaSource{publisher: newPublisher(l, "karmada", debounce), client: c, rest: r}
	s.clusters = newKeyedSet[string, Cluster](&s.mu, s.mark)
	return s, nil
}

func (s *karmadaSource) run(ctx context.Context) {
	f := dynamicinformer.NewDynamicSharedInformerFactory(s.client, 0)
	inf := f.ForResource(KarmadaClusters).Informer()
	s.watchErrors(inf, "clusters.cluster.karmada.io")
	_, _ = inf.AddEventHandler(handler(s.onCluster, s.onDelete))
	f.Start(ctx.Done())
	defer f.Shutdown()
	go s.health(ctx, s.rest)
	s.loop(ctx, s.build)
}

func (s *karmadaSource) onCluster(o any) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	c, err := karmadaCluster(u)
	if err != nil {
		s.live.sourceError(s.name, "cluster", "invalid", fmt.Errorf("%s: %w", s.name, err))
		return
	}
	s.clusters.put(c.Name, c, true)
}

func (s *karmadaSource) onDelete(o any) {
	if u, ok := o.(*unstructured.Unstructured); ok {
		s.clusters.put(u.GetName(), Cluster{}, false)
	}
}

// karmadaCluster reads spec.region, spec.zones (or the older single spec.zone) and
// spec.provider. A cluster in exactly one zone is at the site of that name.
func karmadaCluster(u *unstructured.Unstructured) (Cluster, error) {
	c := Cluster{Name: u.GetName()}
	var err error
	bad := func(field string, e error) error {
		return fmt.Errorf("cluster %q: spec.%s: %w", c.Name, field, e)
	}
	if c.Region, _, err = unstructured.NestedString(u.Object, "spec", "region"); err != nil {
		return c, bad("region", err)
	}
	if c.Provider, _, err = unstructured.NestedString(u.Object, "spec", "provider"); err != nil {
		return c, bad("provider", err)
	}
	if c.Zones, _, err = unstructured.NestedStringSlice(u.Object, "spec", "zones"); err != nil {
		return c, bad("zones", err)
	}
	zone, _, err := unstructured.NestedString(u.Object, "spec", "zone")
	if err != nil {
		return c, bad("zone", err)
	}
	if len(c.Zones) == 0 && zone != "" {
		c.Zones = []string{zone}
	}
	if len(c.Zones) == 1 {
		c.Site = c.Zones[0]
	}
	return c, nil
}

func (s *karmadaSource) build() Inventory {
	s.mu.Lock()
	defer s.mu.Unlock()
	var inv Inventory
	for _, c := range s.clusters.items {
		inv.Clusters = append(inv.Clusters, c)
		if c.Site != "" {
			inv.Sites = append(inv.Sites, Site{Name: c.Site, Region: c.Region})
		}
	}
	slices.SortFunc(inv.Clusters, func(a, b Cluster) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(inv.Sites, func(a, b Site) int { return strings.Compare(a.Name, b.Name) })
	inv.Sites = slices.CompactFunc(inv.Sites, func(a, b Site) bool { return a.Name == b.Name })
	return inv
}
