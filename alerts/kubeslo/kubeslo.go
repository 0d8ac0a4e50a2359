// Package kubeslo reads SLO objects from a Kubernetes API, live: Sloth
// PrometheusServiceLevels (sloth.slok.dev/v1) and Pyrra ServiceLevelObjectives
// (pyrra.dev/v1alpha1), watched with client-go dynamic informers. Each valid object
// becomes one rule file (alerts/slo generates it as Sloth's controller or Pyrra's
// operator would); the whole set is handed to the ruler after every change. An object
// that fails validation gets a Warning Event written on it, is logged and counted, and
// keeps the rules of its last valid version (as Sloth's and Pyrra's controllers leave
// their PrometheusRule alone); the other objects are not affected.
package kubeslo

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meridianhq/meridian/alerts/slo"
)

// Config selects the API server and namespace (yaml `ruler.kubernetes`).
type Config struct {
	// Enabled watches SLO objects; off by default.
	Enabled bool `yaml:"enabled"`
	// Kubeconfig is a kubeconfig file; empty means in-cluster (the pod's service account).
	Kubeconfig string `yaml:"kubeconfig"`
	// Namespace limits the watch to one namespace; empty watches all.
	Namespace string `yaml:"namespace"`
}

// RegisterFlags registers the flags under prefix (e.g. "ruler.kubernetes.").
func (c *Config) RegisterFlags(f *flag.FlagSet, prefix string) {
	f.BoolVar(&c.Enabled, prefix+"enabled", false, "Read Sloth PrometheusServiceLevel and Pyrra ServiceLevelObjective objects from the Kubernetes API and evaluate their rules, following changes live.")
	f.StringVar(&c.Kubeconfig, prefix+"kubeconfig", "", "Kubeconfig file of the API server holding the SLO objects; empty: in-cluster service account.")
	f.StringVar(&c.Namespace, prefix+"namespace", "", "Namespace to read SLO objects from; empty: all namespaces.")
}

// Kinds are the SLO object kinds read.
var (
	SlothGVR = schema.GroupVersionResource{Group: "sloth.slok.dev", Version: "v1", Resource: "prometheusservicelevels"}
	PyrraGVR = schema.GroupVersionResource{Group: "pyrra.dev", Version: "v1alpha1", Resource: "servicelevelobjectives"}
	eventGVR = schema.GroupVersionResource{Version: "v1", Resource: "events"}
)

// EventReason is the reason of the Warning Event written on an invalid object.
const EventReason = "InvalidSLOSpec"

// Deps are what the watcher hands its results to.
type Deps struct {
	// Apply receives the rule files of every valid object after each change, sorted by
	// name. An error is logged and counted; the next change tries again.
	Apply      func([]slo.File) error
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Options generate the rules (window sets, extra labels, version).
	Options slo.Options
	// Parser, when set, checks the generated rules as the evaluator will parse them
	// (its limits included), so an object it would refuse is reported on its own
	// instead of failing the whole set in Apply.
	Parser parser.Parser
}

// Watcher follows the SLO objects of one API server.
type Watcher struct {
	cfg    Config
	deps   Deps
	client dynamic.Interface

	mu    sync.Mutex
	files map[string]slo.File // by object key, the last valid version's rules
	bad   map[string]string   // object key -> kind, of objects whose current version is invalid
	// failing is whether each kind's last list or watch request failed.
	failing map[string]bool
	// seen is the resourceVersion last processed per object: the relist after a
	// reconnection replays every object, which must not report an invalid one again.
	seen map[string]string

	objects   *prometheus.GaugeVec
	invalid   *prometheus.CounterVec
	apiErrors *prometheus.CounterVec
	applyErrs prometheus.Counter
	synced    []cache.InformerSynced
}

// New connects to the API server named by cfg (nothing is sent until Run).
func New(cfg Config, deps Deps) (*Watcher, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("ruler.kubernetes: %w", err)
	}
	rc.UserAgent = "meridian-ruler"
	w := &Watcher{cfg: cfg, deps: deps, files: map[string]slo.File{}, bad: map[string]string{}, failing: map[string]bool{}, seen: map[string]string{},
		objects: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_slo_objects",
			Help: "SLO objects read from the Kubernetes API, by kind and state (valid: their rules are evaluated; invalid: the current version failed validation)."}, []string{"kind", "state"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_slo_object_invalid_total",
			Help: "Versions of SLO objects from the Kubernetes API that failed validation, by kind."}, []string{"kind"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_slo_api_errors_total",
			Help: "Failed list, watch or event-write requests to the Kubernetes API, by kind (the last rules stay in force)."}, []string{"kind"}),
		applyErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_slo_apply_errors_total",
			Help: "Rule sets from Kubernetes SLO objects the ruler failed to load."}),
	}
	for _, k := range []string{"PrometheusServiceLevel", "ServiceLevelObjective"} {
		w.objects.WithLabelValues(k, "valid")
		w.objects.WithLabelValues(k, "invalid")
		w.invalid.WithLabelValues(k)
		w.apiErrors.WithLabelValues(k)
	}
	if err := registerAll(deps.Registerer, w.objects, w.invalid, w.apiErrors, w.applyErrs); err != nil {
		return nil, err
	}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt, w} })
	if w.client, err = dynamic.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("ruler.kubernetes: %w", err)
	}
	return w, nil
}

// countingTransport counts the failed list and watch requests of each kind. The
// informers retry a refused watch inside client-go without reporting it, so an API
// server that is down is only seen here. A kind's first failure and its recovery are
// logged, not every retry.
type countingTransport struct {
	rt http.RoundTripper
	w  *Watcher
}

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := ""
	switch {
	case strings.Contains(req.URL.Path, "/"+SlothGVR.Resource):
		kind = "PrometheusServiceLevel"
	case strings.Contains(req.URL.Path, "/"+PyrraGVR.Resource):
		kind = "ServiceLevelObjective"
	}
	resp, err := c.rt.RoundTrip(req)
	if kind == "" || req.Context().Err() != nil { // not ours, or the watcher stopping
		return resp, err
	}
	failed := err != nil || resp.StatusCode >= 400
	c.w.mu.Lock()
	was := c.w.failing[kind]
	c.w.failing[kind] = failed
	c.w.mu.Unlock()
	switch {
	case failed:
		c.w.apiErrors.WithLabelValues(kind).Inc()
		if !was {
			cause := err
			if cause == nil {
				cause = errors.New(resp.Status)
			}
			c.w.deps.Logger.Warn("kubernetes API request failed; keeping the last rules and retrying", "kind", kind, "err", cause)
		}
	case was:
		c.w.deps.Logger.Info("kubernetes API reachable again", "kind", kind)
	}
	return resp, err
}

func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("kubeslo: register metrics: %w", err)
		}
	}
	return nil
}

// Run starts the informers and returns once ctx is done. Objects are applied as they
// arrive, so an API server that is down delays nothing else.
func (w *Watcher) Run(ctx context.Context) {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(w.client, 0, w.cfg.Namespace, nil)
	var synced []cache.InformerSynced
	for _, k := range []struct {
		gvr  schema.GroupVersionResource
		kind string
	}{{SlothGVR, "PrometheusServiceLevel"}, {PyrraGVR, "ServiceLevelObjective"}} {
		inf := f.ForResource(k.gvr).Informer()
		kind := k.kind
		// A failed list or watch (API down, CRD missing, RBAC refusal) is counted by the
		// transport; the informer retries with backoff and the cache (and rules) stay.
		_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
			if ctx.Err() != nil {
				return // stopping
			}
			w.deps.Logger.Warn("kubernetes SLO list or watch failed; keeping the last rules", "kind", kind, "err", err)
		})
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.upsert(ctx, obj) },
			UpdateFunc: func(_, obj any) { w.upsert(ctx, obj) },
			DeleteFunc: func(obj any) { w.remove(obj) },
		})
		synced = append(synced, inf.HasSynced)
	}
	w.mu.Lock()
	w.synced = synced
	w.mu.Unlock()
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
}

// Synced reports whether both kinds have been listed once.
func (w *Watcher) Synced() bool {
	w.mu.Lock()
	synced := w.synced
	w.mu.Unlock()
	for _, s := range synced {
		if !s() {
			return false
		}
	}
	return len(synced) > 0
}

func key(u *unstructured.Unstructured) string {
	return u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
}

func (w *Watcher) upsert(ctx context.Context, obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	k := key(u)
	w.mu.Lock()
	again := w.seen[k] == u.GetResourceVersion()
	w.seen[k] = u.GetResourceVersion()
	w.mu.Unlock()
	if again {
		return
	}
	file, err := w.generate(u)
	w.mu.Lock()
	if err != nil {
		w.bad[k] = u.GetKind()
	} else {
		delete(w.bad, k)
		w.files[k] = file
	}
	w.mu.Unlock()
	if err != nil {
		w.invalid.WithLabelValues(u.GetKind()).Inc()
		w.deps.Logger.Warn("invalid SLO object; its last valid rules stay", "object", k, "err", err)
		w.event(ctx, u, err)
		w.count()
		return
	}
	w.apply()
}

func (w *Watcher) remove(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	k := key(u)
	w.mu.Lock()
	delete(w.files, k)
	delete(w.bad, k)
	delete(w.seen, k)
	w.mu.Unlock()
	w.apply()
}

// generate turns an object into its rule file. Only the fields a spec file holds are
// kept, so server-set metadata (uid, managedFields) never meets the strict decoders.
func (w *Watcher) generate(u *unstructured.Unstructured) (slo.File, error) {
	doc := map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
		"metadata": map[string]any{"name": u.GetName(), "namespace": u.GetNamespace(), "labels": u.GetLabels(), "annotations": u.GetAnnotations()},
		"spec":     u.Object["spec"]}
	b, err := json.Marshal(doc)
	if err != nil {
		return slo.File{}, err
	}
	source := fmt.Sprintf("kubernetes %s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
	specs, err := slo.Parse(source, b)
	if err != nil {
		return slo.File{}, err
	}
	opts := w.deps.Options
	opts.Mode = slo.ModeController
	f := slo.File{Source: source, Name: strings.ToLower(u.GetKind()) + "_" + u.GetNamespace() + "_" + u.GetName() + ".yml"}
	for _, s := range specs {
		gs, err := slo.Generate(s, opts)
		if err != nil {
			return slo.File{}, err
		}
		f.Groups = append(f.Groups, gs...)
	}
	check := slo.CheckRules
	if w.deps.Parser != nil {
		check = func(gs []rulefmt.RuleGroup) error { return slo.CheckRulesWith(gs, w.deps.Parser) }
	}
	if err := check(f.Groups); err != nil {
		return slo.File{}, fmt.Errorf("%s: generated rules: %w", source, err)
	}
	return f, nil
}

func (w *Watcher) apply() {
	w.mu.Lock()
	files := make([]slo.File, 0, len(w.files))
	for _, k := range slices.Sorted(maps.Keys(w.files)) {
		files = append(files, w.files[k])
	}
	w.mu.Unlock()
	w.count()
	if err := w.deps.Apply(files); err != nil {
		w.applyErrs.Inc()
		w.deps.Logger.Error("load rules of kubernetes SLO objects", "err", err)
	}
}

func (w *Watcher) count() {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := map[[2]string]float64{}
	for k := range w.files {
		if _, bad := w.bad[k]; !bad {
			n[[2]string{strings.Split(k, "/")[0], "valid"}]++
		}
	}
	for _, kind := range w.bad {
		n[[2]string{kind, "invalid"}]++
	}
	for _, kind := range []string{"PrometheusServiceLevel", "ServiceLevelObjective"} {
		for _, st := range []string{"valid", "invalid"} {
			w.objects.WithLabelValues(kind, st).Set(n[[2]string{kind, st}])
		}
	}
}

// event writes a Warning Event on the object, as a controller reports a bad spec:
// `kubectl describe` and `kubectl get events` show it.
func (w *Watcher) event(ctx context.Context, u *unstructured.Unstructured, cause error) {
	now := metav1.Now().UTC().Format(time.RFC3339)
	msg := cause.Error()
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	ev := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Event",
		"metadata": map[string]any{"generateName": u.GetName() + ".", "namespace": u.GetNamespace()},
		"involvedObject": map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "name": u.GetName(),
			"namespace": u.GetNamespace(), "uid": string(u.GetUID()), "resourceVersion": u.GetResourceVersion()},
		"reason": EventReason, "message": msg, "type": "Warning", "count": int64(1),
		"firstTimestamp": now, "lastTimestamp": now,
		"source": map[string]any{"component": "meridian-ruler"},
	}}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := w.client.Resource(eventGVR).Namespace(u.GetNamespace()).Create(ctx, ev, metav1.CreateOptions{}); err != nil && !errors.Is(err, context.Canceled) {
		w.apiErrors.WithLabelValues(u.GetKind()).Inc()
		w.deps.Logger.Warn("write event on invalid SLO object", "object", key(u), "err", err)
	}
}
