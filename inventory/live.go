package inventory

import (
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
)

// SourceYAML is the configuration file's inventory section, the first source.
const SourceYAML = "yaml"

// View is what a component needs of the live inventory: the current snapshot, and a
// signal when it changes.
type View interface {
	Snapshot() *Snapshot
	// Subscribe returns a channel that receives the newest snapshot after every change
	// (a slow reader skips to the newest), until cancel is called.
	Subscribe() (changes <-chan *Snapshot, cancel func())
}

// Live is the merged inventory: one part per source, merged in a fixed order into a new
// Snapshot at every change.
//
// Merge order: the YAML file first, then each Kubernetes cluster in the order configured,
// then Karmada. An entry (site, cluster, node, POP, service, client region) is keyed by
// its name; the first source that declares a name owns the entry, and only the fields
// it leaves empty are filled from later sources. So the file wins, and a node the file
// declares without a WireGuard key takes the key its Kubernetes Node is annotated with.
// Namespaces and workloads are the union of every source's.
type Live struct {
	services.Service // watches the API sources (idle when there are none)

	log     *slog.Logger
	metrics *liveMetrics // nil: not instrumented

	mu    sync.Mutex
	order []string
	parts map[string]Inventory
	subs  map[chan *Snapshot]struct{}
	cur   atomic.Pointer[Snapshot]
}

// NewLive returns an empty live inventory whose sources merge in the given order.
func NewLive(log *slog.Logger, reg prometheus.Registerer, sources ...string) (*Live, error) {
	l := &Live{Service: services.NewIdleService(nil, nil), log: log, order: sources, parts: map[string]Inventory{}, subs: map[chan *Snapshot]struct{}{}}
	if reg != nil {
		m, err := newLiveMetrics(reg)
		if err != nil {
			return nil, err
		}
		l.metrics = m
	}
	l.cur.Store(NewSnapshot(0, Inventory{}))
	return l, nil
}

// Static is a live inventory of one fixed world, for tests and tools.
func Static(inv *Inventory) *Live {
	l, _ := NewLive(slog.New(slog.DiscardHandler), nil, SourceYAML)
	if inv != nil {
		_ = l.Set(SourceYAML, *inv)
	}
	return l
}

// Snapshot returns the current snapshot.
func (l *Live) Snapshot() *Snapshot { return l.cur.Load() }

// Subscribe implements View.
func (l *Live) Subscribe() (<-chan *Snapshot, func()) {
	ch := make(chan *Snapshot, 1)
	l.mu.Lock()
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.subs, ch)
			l.mu.Unlock()
		})
	}
}

// Set replaces one source's part and publishes the new merged snapshot.
func (l *Live) Set(source string, part Inventory) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	known := false
	for _, s := range l.order {
		known = known || s == source
	}
	if !known {
		return fmt.Errorf("inventory: unknown source %q (sources: %v)", source, l.order)
	}
	l.parts[source] = part
	parts := make([]Inventory, 0, len(l.order))
	for _, s := range l.order {
		if p, ok := l.parts[s]; ok {
			parts = append(parts, p)
		}
	}
	start := time.Now()
	prev := l.cur.Load()
	snap := prev.next(prev.version+1, merge(parts))
	for _, err := range snap.conflicts {
		if !slicesContainsErr(prev.conflicts, err) {
			l.log.Warn("inventory: identity claimed twice", "err", err)
		}
	}
	l.cur.Store(snap)
	for ch := range l.subs {
		select { // keep only the newest: drop the one not read yet
		case <-ch:
		default:
		}
		ch <- snap
	}
	if m := l.metrics; m != nil {
		m.observe(source, snap, time.Since(start))
	}
	return nil
}

func slicesContainsErr(errs []error, e error) bool {
	for _, x := range errs {
		if x.Error() == e.Error() {
			return true
		}
	}
	return false
}

// merge applies the documented order: parts[0] wins.
func merge(parts []Inventory) Inventory {
	if len(parts) == 1 {
		return parts[0]
	}
	var out Inventory
	sites, clusters, nodes := map[string]int{}, map[string]int{}, map[string]int{}
	pops, services, regions := map[string]int{}, map[string]int{}, map[string]int{}
	nss, wls := map[Namespace]bool{}, map[Workload]bool{}
	for _, p := range parts {
		mergeNamed(&out.Sites, sites, p.Sites, func(x *Site) string { return x.Name })
		mergeNamed(&out.Clusters, clusters, p.Clusters, func(x *Cluster) string { return x.Name })
		mergeNamed(&out.Nodes, nodes, p.Nodes, func(x *Node) string { return x.Name })
		mergeNamed(&out.POPs, pops, p.POPs, func(x *POP) string { return x.Name })
		mergeNamed(&out.Services, services, p.Services, func(x *Service) string { return x.Name })
		mergeNamed(&out.ClientRegions, regions, p.ClientRegions, func(x *ClientRegion) string { return x.Name })
		for _, n := range p.Namespaces {
			if !nss[n] {
				nss[n] = true
				out.Namespaces = append(out.Namespaces, n)
			}
		}
		for _, w := range p.Workloads {
			if !wls[w] {
				wls[w] = true
				out.Workloads = append(out.Workloads, w)
			}
		}
	}
	return out
}

// mergeNamed appends the entries of a later source: a new name is added, a known one
// only fills the fields the earlier source left empty.
func mergeNamed[T any](dst *[]T, idx map[string]int, items []T, name func(*T) string) {
	for i := range items {
		k := name(&items[i])
		if j, ok := idx[k]; ok {
			fill(&(*dst)[j], &items[i])
			continue
		}
		idx[k] = len(*dst)
		*dst = append(*dst, items[i])
	}
}

// fill sets each zero field of *dst to src's.
func fill[T any](dst, src *T) {
	d, s := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem()
	for i := range d.NumField() {
		if f := d.Field(i); f.IsZero() {
			f.Set(s.Field(i))
		}
	}
}

type liveMetrics struct {
	version    prometheus.Gauge
	entries    *prometheus.GaugeVec
	conflicts  prometheus.Gauge
	updates    *prometheus.CounterVec
	lastUpdate *prometheus.GaugeVec
	merge      prometheus.Histogram
	errors     *prometheus.CounterVec
	up         *prometheus.GaugeVec
}

func newLiveMetrics(reg prometheus.Registerer) (*liveMetrics, error) {
	m := &liveMetrics{
		version: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_inventory_version",
			Help: "Version of the current inventory snapshot; it increases with every change."}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_inventory_entries",
			Help: "Entries of the current inventory snapshot, by kind."}, []string{"kind"}),
		conflicts: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_inventory_conflicts",
			Help: "Identities (WireGuard key, Ceph host, VIP, pod CIDR) two entries of the current snapshot claim; the first keeps each."}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_inventory_updates_total",
			Help: "New snapshots published, by the source whose change made them."}, []string{"source"}),
		lastUpdate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_inventory_last_update_timestamp_seconds",
			Help: "When each source last changed the inventory."}, []string{"source"}),
		merge: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meridian_inventory_merge_duration_seconds",
			Help: "Time to merge the sources and index a new snapshot.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_inventory_source_errors_total",
			Help: "Source errors, by source, object kind and reason (unreachable, forbidden, unauthorized, invalid, ...); the last good inventory stays."}, []string{"source", "kind", "reason"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meridian_inventory_source_up",
			Help: "1 when the source's API server answered its last health check (/readyz), 0 when not."}, []string{"source"}),
	}
	for _, c := range []prometheus.Collector{m.version, m.entries, m.conflicts, m.updates, m.lastUpdate, m.merge, m.errors, m.up} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("inventory metrics: %w", err)
		}
	}
	return m, nil
}

func (m *liveMetrics) observe(source string, s *Snapshot, took time.Duration) {
	inv := s.Inventory()
	m.version.Set(float64(s.version))
	for kind, n := range map[string]int{"site": len(inv.Sites), "cluster": len(inv.Clusters), "node": len(inv.Nodes), "pop": len(inv.POPs),
		"service": len(inv.Services), "client_region": len(inv.ClientRegions), "namespace": len(inv.Namespaces), "workload": len(inv.Workloads)} {
		m.entries.WithLabelValues(kind).Set(float64(n))
	}
	m.conflicts.Set(float64(len(s.conflicts)))
	m.updates.WithLabelValues(source).Inc()
	m.lastUpdate.WithLabelValues(source).SetToCurrentTime()
	m.merge.Observe(took.Seconds())
}

// sourceError counts and logs one source problem; the inventory is left as it was.
func (l *Live) sourceError(source, kind, reason string, err error) {
	l.log.Error("inventory source: keeping the last good inventory", "source", source, "kind", kind, "reason", reason, "err", err)
	if l.metrics != nil {
		l.metrics.errors.WithLabelValues(source, kind, reason).Inc()
	}
}
