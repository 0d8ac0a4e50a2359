package ruler

import (
	"context"
	"flag"
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
