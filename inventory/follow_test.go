package inventory_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/collectors/wireguard"
	"github.com/meridianhq/meridian/internal/kubetest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/topomap"
)

// mapFeed hands the collector's records to the map and keeps the tunnel records.
type mapFeed struct {
	m  *topomap.Map
	mu sync.Mutex
	ts []*pipeline.TunnelStat
}

func (f *mapFeed) Append(_ context.Context, recs ...pipeline.Record) error {
	f.m.Consume(recs)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range recs {
		f.ts = append(f.ts, r.(*pipeline.TunnelStat))
	}
	return nil
}

func (f *mapFeed) peerOf(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.ts) - 1; i >= 0; i-- {
		if f.ts[i].PublicKey == key {
			return f.ts[i].PeerNode
		}
	}
	return ""
}

func start(t *testing.T, s services.Service) {
	t.Helper()
	if err := services.StartAndAwaitRunning(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), s) })
}

// TestCollectorsAndMapFollowTheAPI: a Node annotated with the WireGuard key of a peer the
// collector already reports unmapped — in a real kube-apiserver — is mapped by the
// running collector and drawn on the running map, without a restart; re-labelling the
// Node moves it on the map, deleting it unmaps the peer again. Each step's time from the
// API write is logged and bounded (polled every 250 ms: a figure below that is "at the
// first look").
func TestCollectorsAndMapFollowTheAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	const bound = 5 * time.Second
	const peerKey = "923V/iAdcz8BcqB0Xo6pDJzARGBJCQ6fWe+peixQyB4=" // a peer in the dump below
	api := kubetest.Start(t)
	api.Discover(t)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	live, err := inventory.New(inventory.Config{Kubernetes: []inventory.KubernetesSource{{Cluster: "edge", Kubeconfig: api.Kubeconfig(t)}},
		Debounce: 50 * time.Millisecond}, inventory.Deps{Logger: discard, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Set(inventory.SourceYAML, inventory.Inventory{Sites: []inventory.Site{{Name: "paris-a", Lat: 48.85, Lon: 2.35}}}); err != nil {
		t.Fatal(err)
	}
	start(t, live)

	var mcfg topomap.Config
	mcfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	mcfg.Anonymous, mcfg.Tick = true, 50*time.Millisecond
	m, err := topomap.New(mcfg, topomap.Deps{Live: live, Logger: discard, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	start(t, m)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	// mapNode checks the map's snapshot for node id at site, under parent.
	mapNode := func(id, site, parent string) error {
		resp, err := srv.Client().Get(srv.URL + "/map/api/snapshot")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var snap struct {
			Nodes []struct{ ID, Site, Parent string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
			return err
		}
		for _, n := range snap.Nodes {
			if n.ID == id {
				if n.Site != site || n.Parent != parent {
					return fmt.Errorf("%s at %q under %q", id, n.Site, n.Parent)
				}
				return nil
			}
		}
		return fmt.Errorf("no node %s", id)
	}

	dump := filepath.Join(t.TempDir(), "dump.txt")
	b, err := os.ReadFile("../testdata/wireguard/mindflavor-wg-show-all-dump-issue19.txt")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dump, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var wcfg wireguard.Config
	wcfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	wcfg.DumpFiles, wcfg.Interval, wcfg.Timeout = []string{dump}, time.Hour, time.Minute // only inventory changes read again
	feed := &mapFeed{m: m}
	c, err := wireguard.New(wcfg, wireguard.Deps{Logger: discard, Registerer: prometheus.NewRegistry(), Appender: feed, Inventory: live})
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)

	node := func(zone string) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": "edge-9",
			"labels": map[string]any{"topology.kubernetes.io/zone": zone}, "annotations": map[string]any{inventory.DefaultWireGuardKeyAnnotation: peerKey}}}
	}
	step := func(what string, cond func() error) {
		t.Helper()
		t0 := time.Now()
		wait.For(t, bound, what, cond)
		t.Logf("%s: %v after the API write (bound %v)", what, time.Since(t0).Round(time.Millisecond), bound)
	}
	if err := api.Apply(node("paris-a"), ""); err != nil {
		t.Fatal(err)
	}
	step("collector maps the peer to the new Node", func() error {
		if p := feed.peerOf(peerKey); p != "edge-9" {
			return fmt.Errorf("peer mapped to %q", p)
		}
		return nil
	})
	step("map draws the Node", func() error { return mapNode("node:edge-9", "paris-a", "cluster:edge") })

	if err := api.Apply(node("paris-b"), ""); err != nil {
		t.Fatal(err)
	}
	step("map moves the re-labelled Node", func() error { return mapNode("node:edge-9", "paris-b", "cluster:edge") })

	if err := api.Delete(node(""), ""); err != nil {
		t.Fatal(err)
	}
	step("collector unmaps the deleted Node's peer", func() error {
		if p := feed.peerOf(peerKey); p != "" {
			return fmt.Errorf("peer still mapped to %q", p)
		}
		return nil
	})
}
