package steering

import (
	"math"
	"time"

	"github.com/meridianhq/meridian/collectors/geodns"
)

// regretOf is what steering costs a group's clients now, in milliseconds of round trip:
// the cost (cost: measured RTT from the region's vantage, else great-circle distance) of
// the POPs it is answered with, weighted, minus that of the best POP its residency allows
// that is healthy (not down by the probe quorum, not drained by a page-severity alert).
// Holds, ramps, RTT hysteresis, ticket lowering and manual drains all show as regret; a
// region without a vantage, or with no healthy POP to compare with, has 0. It may be
// negative while a nearer POP that is not healthy still serves (a ramp, a fail-open).
func (e *Engine) regretOf(g *group, health map[string]geodns.POPHealth, pages map[string]string, rtt map[[2]string]time.Duration) float64 {
	if g.region.Vantage == "" {
		return 0
	}
	best := math.Inf(1)
	var sum, weights float64
	for _, p := range g.candidates {
		c := e.cost(g.region, p, rtt)
		if _, paged := alertFor(pages, g.svc.Name, p); !health[p].Down && !paged {
			best = min(best, c)
		}
		if w := e.entries[key{g.svc.Name, g.region.Name, p}].w; w > 0 {
			sum, weights = sum+w*c, weights+w
		}
	}
	if weights == 0 || math.IsInf(best, 1) || math.IsInf(sum, 1) {
		return 0
	}
	// Rounded to a nanosecond of RTT: the weighted mean of equal costs is not always
	// exactly the cost in floating point, and a regret of -7e-15 ms reads as a bug.
	if r := math.Round((sum/weights-best)*1e6) / 1e6; r != 0 {
		return r
	}
	return 0 // not -0
}
