package topomap

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// FilterSpec is what a client asks to see. Empty lists mean "all".
type FilterSpec struct {
	Layers   []string `json:"layers,omitempty"`   // kind names or the groups in Layers
	Sites    []string `json:"sites,omitempty"`    // elements at (or touching) these sites
	Clusters []string `json:"clusters,omitempty"` // elements in (or touching) these clusters
}

// filter is a compiled FilterSpec; a nil *filter matches everything.
type filter struct {
	kinds    map[string]bool
	sites    map[string]bool
	clusters map[string]bool
}

var allKinds = []string{KindRegion, KindSite, KindCluster, KindNode, KindOSD, KindWorkload, KindPOP,
	KindTunnel, KindFlow, KindStorage, KindProbe, KindSteer}

func compileFilter(s FilterSpec) (*filter, error) {
	if len(s.Layers)+len(s.Sites)+len(s.Clusters) == 0 {
		return nil, nil
	}
	f := &filter{}
	toSet := func(l []string) map[string]bool {
		if len(l) == 0 {
			return nil
		}
		m := map[string]bool{}
		for _, v := range l {
			m[v] = true
		}
		return m
	}
	if len(s.Layers) > 0 {
		f.kinds = map[string]bool{}
		for _, l := range s.Layers {
			switch {
			case Layers[l] != nil:
				for _, k := range Layers[l] {
					f.kinds[k] = true
				}
			case slices.Contains(allKinds, l):
				f.kinds[l] = true
			default:
				return nil, fmt.Errorf("unknown layer %q", l)
			}
		}
	}
	f.sites, f.clusters = toSet(s.Sites), toSet(s.Clusters)
	return f, nil
}

// filterFromQuery reads layers, sites and clusters query parameters (comma-separated).
func filterFromQuery(q url.Values) (*filter, error) {
	split := func(k string) []string {
		var out []string
		for _, v := range q[k] {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
		return out
	}
	return compileFilter(FilterSpec{Layers: split("layers"), Sites: split("sites"), Clusters: split("clusters")})
}

func (f *filter) node(n *Node) bool {
	if f == nil {
		return true
	}
	return (f.kinds == nil || f.kinds[n.Kind]) &&
		(f.sites == nil || f.sites[n.Site]) &&
		(f.clusters == nil || f.clusters[n.Cluster])
}

func (f *filter) edge(e *Edge) bool {
	if f == nil {
		return true
	}
	return (f.kinds == nil || f.kinds[e.Kind]) && anyIn(f.sites, e.Sites) && anyIn(f.clusters, e.Clusters)
}

func anyIn(set map[string]bool, vals []string) bool {
	if set == nil {
		return true
	}
	for _, v := range vals {
		if set[v] {
			return true
		}
	}
	return false
}
