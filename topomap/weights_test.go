package topomap

import (
	"testing"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// popLabel is what the page writes on a POP (web/src/world.js popWeights): the mean of
// the weights of the steer edges into it.
func (g *graph) popLabel(pop string) (float64, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	sum, n := 0.0, 0
	for _, es := range g.edges {
		if es.e.Kind == KindSteer && es.e.Target == popID(pop) {
			sum += es.e.Metrics["weight"]
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), n
}

// TestSteerEdgesStayObservedInACalmWorld: steering decides once, then its weights stay
// put for half an hour. While steering reports them, no steer edge or region goes
// unknown or away, and every POP label equals the mean of steering's own weights for it.
// Without the reports (decisions alone), the same edges go unknown after stale_after.
func TestSteerEdgesStayObservedInACalmWorld(t *testing.T) {
	const svc = "api.example.net."
	now := time.Now()
	weights := []Weight{
		{Service: svc, Region: "eu-west", POP: "lon", Weight: 1, Cause: "rtt", Since: now},
		{Service: svc, Region: "eu-west", POP: "par", Weight: 1, Cause: "rtt", Since: now},
		{Service: svc, Region: "us-east", POP: "lon", Weight: 1, Cause: "rtt", Since: now},
		{Service: svc, Region: "us-east", POP: "par", Weight: 0, Cause: "rtt", Since: now},
		{Service: svc, Region: defaultRegion, POP: "lon", Weight: 1, Cause: "rtt", Since: now},
		{Service: svc, Region: defaultRegion, POP: "par", Weight: 1, Cause: "rtt", Since: now},
	}
	var decisions []pipeline.Record
	for _, w := range weights {
		decisions = append(decisions, &pipeline.SteeringDecision{M: pipeline.Meta{Time: w.Since}, Service: w.Service, ClientRegion: w.Region, POP: w.POP, NewWeight: w.Weight, Cause: w.Cause})
	}
	want := map[string]float64{"lon": 1, "par": 2.0 / 3}

	for _, tc := range []struct {
		name    string
		report  bool
		unknown bool // the edges end unknown
	}{
		{"steering reports its weights", true, false},
		{"decisions alone", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, clk := newTestGraph()
			g.Consume(decisions)
			for end := clk.t.Add(30 * time.Minute); clk.t.Before(end); clk.t = clk.t.Add(5 * time.Second) {
				if tc.report {
					g.applyWeights(weights)
				}
				g.age()
				g.flush()
				if !tc.report {
					continue
				}
				for _, w := range weights {
					if st := g.status(steerID(w)); st == "unknown" || st == "" {
						t.Fatalf("%s: steer edge %s is %q while steering reports it", clk.t.Format(time.TimeOnly), steerID(w), st)
					}
					if st := g.status(regionID(w.Region)); st == "unknown" {
						t.Fatalf("%s: region %s unknown while steering reports it", clk.t.Format(time.TimeOnly), w.Region)
					}
				}
				for pop, mean := range want {
					if got, n := g.popLabel(pop); got != mean || n != 3 {
						t.Fatalf("%s: POP %s label %v over %d edges, steering says %v over 3", clk.t.Format(time.TimeOnly), pop, got, n, mean)
					}
				}
			}
			if st := g.status(steerID(weights[0])); (st == "unknown" || st == "") != tc.unknown {
				t.Fatalf("after 30 calm minutes the edge is %q", st)
			}
		})
	}
}

// TestSteerReportsAndDecisionsAgree: a report changes an edge only when it says
// something new, a decision the pipeline delivers after a later report does not roll the
// weight back, and edges age to unknown once steering stops reporting.
func TestSteerReportsAndDecisionsAgree(t *testing.T) {
	g, clk := newTestGraph()
	t0 := clk.t
	w := Weight{Service: "api.example.net.", Region: "eu-west", POP: "lon", Weight: 0.5, Cause: "restore", Since: t0}
	g.applyWeights([]Weight{w})
	if _, edges, _, _, _ := g.flush(); len(edges) != 1 || edges[0].Metrics["weight"] != 0.5 {
		t.Fatalf("first report: delta edges %+v, want the new steer edge at 0.5", edges)
	}
	clk.t = clk.t.Add(5 * time.Second)
	g.applyWeights([]Weight{w})
	if _, edges, _, _, _ := g.flush(); len(edges) != 0 {
		t.Fatalf("an unchanged report sent %d edges, want none", len(edges))
	}
	later := w
	later.Weight, later.Since = 0.75, t0.Add(5*time.Second)
	g.applyWeights([]Weight{later})
	g.Consume([]pipeline.Record{&pipeline.SteeringDecision{M: pipeline.Meta{Time: t0.Add(time.Second)}, Service: w.Service, ClientRegion: w.Region, POP: w.POP, OldWeight: 0.25, NewWeight: 0.5, Cause: "restore"}})
	g.flush()
	if got, _ := g.popLabel("lon"); got != 0.75 {
		t.Fatalf("a late decision rolled lon back to %v, want the reported 0.75", got)
	}
	clk.t = clk.t.Add(testRules().StaleAfter + time.Second)
	g.age()
	if st := g.status(steerID(w)); st != "unknown" {
		t.Fatalf("steer edge %q after steering went silent for stale_after, want unknown", st)
	}
}
