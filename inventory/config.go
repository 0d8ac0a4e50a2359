package inventory

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config names the API sources merged after the YAML file (`inventory_sources:`).
type Config struct {
	Kubernetes []KubernetesSource `yaml:"kubernetes"`
	Karmada    KarmadaSource      `yaml:"karmada"`
	// Debounce gathers a burst of API events (a resync, a rollout) into one snapshot.
	Debounce time.Duration `yaml:"debounce"`
}

// KubernetesSource is one cluster whose Nodes, namespaces, Deployments and StatefulSets
// join the inventory.
type KubernetesSource struct {
	Cluster    string `yaml:"cluster"`    // inventory cluster of its nodes
	Kubeconfig string `yaml:"kubeconfig"` // empty: the in-cluster service account
	Site       string `yaml:"site"`       // site of nodes that carry no site label
	// SiteLabels and RegionLabels are tried in order; the first one a node carries names
	// its site (and region). On bare metal they are set by hand, hence the choice.
	SiteLabels             []string `yaml:"site_labels"`
	RegionLabels           []string `yaml:"region_labels"`
	WireGuardKeyAnnotation string   `yaml:"wireguard_key_annotation"`
	// LocationAnnotation holds "lat,lon" for a site the file does not place.
	LocationAnnotation string `yaml:"location_annotation"`
	// Workloads: watch namespaces, Deployments and StatefulSets for flow owner names.
	Workloads *bool `yaml:"workloads"`
}

// KarmadaSource is a Karmada control plane whose member Clusters join the inventory.
type KarmadaSource struct {
	Kubeconfig string `yaml:"kubeconfig"` // empty: no Karmada
}

// Defaults of a KubernetesSource's fields left empty.
var (
	DefaultSiteLabels   = []string{"topology.kubernetes.io/zone", "topology.rook.io/datacenter", "failure-domain.beta.kubernetes.io/zone"}
	DefaultRegionLabels = []string{"topology.kubernetes.io/region", "topology.rook.io/region", "failure-domain.beta.kubernetes.io/region"}
)

const (
	// DefaultWireGuardKeyAnnotation is where Kilo keeps each node's WireGuard public key.
	DefaultWireGuardKeyAnnotation = "kilo.squat.ai/key"
	DefaultLocationAnnotation     = "meridian.dev/location"
)

// RegisterFlags registers the flags, prefixed "inventory.", and sets the defaults. The
// Kubernetes clusters are a YAML list.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.Debounce, "inventory.debounce", 250*time.Millisecond, "How long API changes are gathered before a new inventory snapshot is published.")
	f.StringVar(&c.Karmada.Kubeconfig, "inventory.karmada-kubeconfig", "", "Kubeconfig of a Karmada control plane whose member Clusters (cluster.karmada.io/v1alpha1) join the inventory; empty: none.")
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.Debounce < 0 {
		errs = append(errs, errors.New("inventory_sources.debounce: must be >= 0"))
	}
	seen := map[string]bool{}
	for i, k := range c.Kubernetes {
		switch {
		case k.Cluster == "":
			errs = append(errs, fmt.Errorf("inventory_sources.kubernetes[%d].cluster: empty (the inventory cluster its nodes belong to)", i))
		case seen[k.Cluster]:
			errs = append(errs, fmt.Errorf("inventory_sources.kubernetes[%d].cluster: %q is listed twice", i, k.Cluster))
		}
		seen[k.Cluster] = true
	}
	return errors.Join(errs...)
}

// withDefaults fills the fields left empty.
func (k KubernetesSource) withDefaults() KubernetesSource {
	if len(k.SiteLabels) == 0 {
		k.SiteLabels = DefaultSiteLabels
	}
	if len(k.RegionLabels) == 0 {
		k.RegionLabels = DefaultRegionLabels
	}
	if k.WireGuardKeyAnnotation == "" {
		k.WireGuardKeyAnnotation = DefaultWireGuardKeyAnnotation
	}
	if k.LocationAnnotation == "" {
		k.LocationAnnotation = DefaultLocationAnnotation
	}
	if k.Workloads == nil {
		on := true
		k.Workloads = &on
	}
	return k
}

// Sources lists the source names in merge order.
func (c *Config) Sources() []string {
	out := []string{SourceYAML}
	for _, k := range c.Kubernetes {
		out = append(out, "kubernetes/"+k.Cluster)
	}
	if c.Karmada.Kubeconfig != "" {
		out = append(out, "karmada")
	}
	return out
}
