package ruler

import (
	"context"
	"flag"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/inventory"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/topomap"
)

// TestAlertHistoryAndCause: lon's probes fail. The page reaches a real Alertmanager with
// the live map's top cause beneath lon (its failed probe, with the record) as the
// meridian_cause annotation, and the ruler records the page firing; lon recovers and the
// resolution is recorded too.
func TestAlertHistoryAndCause(t *testing.T) {
	amURL, hook := amtest.Start(t)
	var mcfg topomap.Config
	mcfg.RegisterFlags(flag.NewFlagSet("topomap", flag.ContinueOnError))
	m, err := topomap.New(mcfg, topomap.Deps{Inventory: testInventory(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), m) })

	var mu sync.Mutex
	var recorded []*pipeline.AlertState
	app := pipeline.AppenderFunc(func(_ context.Context, recs ...pipeline.Record) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			recorded = append(recorded, r.(*pipeline.AlertState))
		}
		return nil
	})
	findRecorded := func(state string) *pipeline.AlertState {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range recorded {
			if a.State == state && a.Name == "MeridianPOPAvailability" && a.Severity == alerts.SeverityPage && a.Labels["pop"] == "lon" {
				return a
			}
		}
		return nil
	}

	reg := prometheus.NewRegistry()
	s := sli.New(sli.Deps{Inventory: inventory.Static(testInventory())})
	reg.MustRegister(s)
	var failing atomic.Bool
	prober(t, s, &failing, m)
	r := startRulerConfig(t, s, reg, testConfig(t, amURL), func(r *Ruler) { r.RecordAlerts(app); r.Explain(m) })
	wait.Until(t, 10*time.Second, "SLI series in the TSDB", func() bool { return testutil.ToFloat64(r.appended) > 0 })

	failing.Store(true)
	wait.Until(t, 30*time.Second, "the page with its cause at the webhook", func() bool {
		msg, ok := hook.Find("firing", map[string]string{"alertname": "MeridianPOPAvailability", "pop": "lon", "sloth_severity": "page"})
		return ok && msg.Alerts[0].Annotations[alerts.AnnotationCause] != ""
	})
	msg, _ := hook.Find("firing", map[string]string{"alertname": "MeridianPOPAvailability", "pop": "lon", "sloth_severity": "page"})
	cause := msg.Alerts[0].Annotations[alerts.AnnotationCause]
	for _, want := range []string{"probe:nyc-1->lon/http (down since ", "probes: nyc-1 http → lon failed"} {
		if !strings.Contains(cause, want) {
			t.Errorf("%s = %q, want it to contain %q", alerts.AnnotationCause, cause, want)
		}
	}
	if msg.Alerts[0].Annotations["summary"] == "" {
		t.Errorf("the rule's own annotations are lost: %v", msg.Alerts[0].Annotations)
	}
	wait.Until(t, 10*time.Second, "the page recorded firing", func() bool { return findRecorded(pipeline.AlertFiring) != nil })
	if a := findRecorded(pipeline.AlertFiring); a.M.Collector != "ruler" || a.ActiveAt.IsZero() || a.Keyframe || a.Labels["slo"] != "availability" {
		t.Errorf("recorded firing %+v", a)
	}

	failing.Store(false)
	wait.Until(t, 60*time.Second, "the page recorded resolved", func() bool { return findRecorded(pipeline.AlertResolved) != nil })
	if f, r := findRecorded(pipeline.AlertFiring), findRecorded(pipeline.AlertResolved); !r.M.Time.After(f.M.Time) {
		t.Errorf("resolved at %v, not after firing at %v", r.M.Time, f.M.Time)
	}
}

// TestTunnelAndCephAlertCauses: the WireGuard tunnel between London and Paris goes down
// and one of a Ceph cluster's three OSDs too. The tunnel SLO's page and the built-in
// MeridianCephOSDDownHigh reach a real Alertmanager naming, as meridian_cause, the down
// tunnel and the down OSD (on its host), each with its record and since when.
func TestTunnelAndCephAlertCauses(t *testing.T) {
	amURL, hook := amtest.Start(t)
	inv := &inventory.Inventory{
		Sites:    []inventory.Site{{Name: "london"}, {Name: "paris"}, {Name: "nyc"}},
		Clusters: []inventory.Cluster{{Name: "edge-lon", Site: "london"}, {Name: "edge-par", Site: "paris"}, {Name: "vault", Site: "nyc"}},
		Nodes: []inventory.Node{{Name: "lon-1", Site: "london", Cluster: "edge-lon"}, {Name: "par-1", Site: "paris", Cluster: "edge-par"},
			{Name: "vault-1", Site: "nyc", Cluster: "vault", CephHost: "vault-1"}, {Name: "vault-2", Site: "nyc", Cluster: "vault", CephHost: "vault-2"}},
	}
	var mcfg topomap.Config
	mcfg.RegisterFlags(flag.NewFlagSet("topomap", flag.ContinueOnError))
	m, err := topomap.New(mcfg, topomap.Deps{Inventory: inv, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { services.StopAndAwaitTerminated(context.Background(), m) })

	reg := prometheus.NewRegistry()
	s := sli.New(sli.Deps{Inventory: inventory.Static(inv)})
	reg.MustRegister(s)
	var failing atomic.Bool
	feed(t, func(now time.Time) []pipeline.Record {
		bad := failing.Load()
		tunnel := pipeline.StatusOK
		if bad {
			tunnel = pipeline.StatusDown
		}
		health := &pipeline.CephHealth{M: pipeline.Meta{Time: now, Site: "nyc", Cluster: "vault"}, FSID: "f00d", Status: "HEALTH_OK", OSDsTotal: 3, OSDsUp: 3, OSDsIn: 3}
		if bad {
			health.Status, health.Checks, health.OSDsUp = "HEALTH_WARN", []string{"OSD_DOWN"}, 2
		}
		recs := []pipeline.Record{
			&pipeline.TunnelStat{M: pipeline.Meta{Time: now, Site: "london", Cluster: "edge-lon", Node: "lon-1"}, Interface: "wg0", PeerNode: "par-1", PeerSite: "paris", Status: tunnel},
			health,
		}
		for osd, host := range []string{"vault-1", "vault-1", "vault-2"} {
			recs = append(recs, &pipeline.OSDStat{M: pipeline.Meta{Time: now, Site: "nyc", Cluster: "vault", Node: host}, FSID: "f00d", OSD: uint32(osd),
				Host: host, Up: !bad || osd != 2, In: true, CommitLatencyMs: 1})
		}
		return recs
	}, s, m)
	cfg := testConfig(t, amURL)
	cfg.SpecFiles = []string{filepath.Join(fastSpecs, "fast-tunnel.yaml")}
	r := startRulerConfig(t, s, reg, cfg, func(r *Ruler) { r.Explain(m) })
	wait.Until(t, 10*time.Second, "SLI series in the TSDB", func() bool { return testutil.ToFloat64(r.appended) > 0 })

	failing.Store(true)
	for _, c := range []struct {
		labels map[string]string
		want   []string
	}{
		{map[string]string{"alertname": "MeridianTunnelAvailability", "site": "london", "peer_site": "paris", "sloth_severity": "page"},
			[]string{"tunnel:node:lon-1|node:par-1 (down since ", "tunnel_stats: WireGuard lon-1 ↔ par-1 reported down at "}},
		{map[string]string{"alertname": "MeridianCephOSDDownHigh", "cluster": "vault"},
			[]string{"osd:f00d.2 (down since ", "osd_stats: osd.2 on vault-2 up=false"}},
	} {
		wait.Until(t, 30*time.Second, c.labels["alertname"]+" with its cause at the webhook", func() bool {
			msg, ok := hook.Find("firing", c.labels)
			return ok && msg.Alerts[0].Annotations[alerts.AnnotationCause] != ""
		})
		msg, _ := hook.Find("firing", c.labels)
		cause := msg.Alerts[0].Annotations[alerts.AnnotationCause]
		for _, want := range c.want {
			if !strings.Contains(cause, want) {
				t.Errorf("%s: %s = %q, want it to contain %q", c.labels["alertname"], alerts.AnnotationCause, cause, want)
			}
		}
	}
}
