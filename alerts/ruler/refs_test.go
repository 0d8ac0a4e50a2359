package ruler

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/alerts/sli"
	"github.com/meridianhq/meridian/inventory"
)

// TestSeriesRefsFollowChurn: a stored series whose label value changes every tick (a
// pod, a peer) leaves the ruler's reference cache once it is gone, so a day of churn
// leaves the cache at one tick's series, not one entry per value ever seen.
func TestSeriesRefsFollowChurn(t *testing.T) {
	var cfg Config
	cfg.RegisterFlags(flagSet())
	cfg.DataDir = t.TempDir()
	s := sli.New(sli.Deps{Inventory: inventory.Static(&inventory.Inventory{})})
	r, err := New(cfg, Deps{SLI: s, Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	churn := prometheus.NewRegistry()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "churn", Help: "a series per tick"}, []string{"pod"})
	churn.MustRegister(g)
	if err := r.Store(churn, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.starting(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.stopping(nil)

	base := time.Now()
	r.appendSLI(base)
	steady := len(r.refs) // the SLI registry's own series, before any churn
	const ticks = 500
	for i := range ticks {
		g.Reset()
		g.WithLabelValues(fmt.Sprintf("pod-%d", i)).Set(1)
		r.appendSLI(base.Add(time.Duration(i+1) * 10 * time.Second))
	}
	if got := len(r.refs); got != steady+1 {
		t.Fatalf("reference cache after %d ticks of churn: %d series, want %d (the SLI registry's %d and the one live pod)", ticks, got, steady+1, steady)
	}
	if v := testutil.ToFloat64(r.appendErrors); v != 0 {
		t.Fatalf("%v append errors", v)
	}
}
