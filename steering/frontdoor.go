package steering

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// frontDoor is the engine's own LoadSource (used when Deps.Load is nil): it folds the
// pipeline's HAProxyStat frontend records (collectors/haproxy), as Consume folds probes,
// into each POP's load.
//
// A POP's rate is the sum, over the latest record of each of its HAProxy nodes'
// frontends, of Utilisation × the POP's capacity.sessions_per_second: equivalent new
// sessions per second, in the unit of the watermarks. Utilisation is already the larger of
// the session and the bandwidth shares, and is 0 for frontends the collector does not
// count (its exporter's own), so the sum holds exactly what loads the POP. A frontend
// whose latest record is older than Shed.Stale drops out (a node gone silent carries
// nothing it can prove); Seen is the newest record summed.
type frontDoor struct {
	mu     sync.Mutex
	latest map[frontendKey]frontendLoad
}

type frontendKey struct{ pop, node, proxy string }

type frontendLoad struct {
	util float64
	seen time.Time
}

func newFrontDoor() *frontDoor { return &frontDoor{latest: map[frontendKey]frontendLoad{}} }

// observe keeps the newest record of each frontend; others are not loads.
func (f *frontDoor) observe(r *pipeline.HAProxyStat) {
	if r.Type != "frontend" || r.POP == "" {
		return
	}
	k := frontendKey{r.POP, r.M.Node, r.Proxy}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.latest[k]; ok && !r.M.Time.After(old.seen) {
		return // the pipeline may deliver a replica's late batch after a newer one
	}
	f.latest[k] = frontendLoad{util: r.Utilisation, seen: r.M.Time.Round(0)}
}

// loads sums each POP's fresh frontends at now; capacity gives a POP's
// sessions_per_second (0: unknown, the POP is left out). Frontends stale at now are
// forgotten, so the map stays bounded by what HAProxy still reports.
func (f *frontDoor) loads(now time.Time, stale time.Duration, capacity func(pop string) float64) []POPLoad {
	f.mu.Lock()
	defer f.mu.Unlock()
	byPOP := map[string]*POPLoad{}
	for k, l := range f.latest {
		if now.Sub(l.seen) > stale {
			delete(f.latest, k)
			continue
		}
		c := capacity(k.pop)
		if c <= 0 {
			continue
		}
		p := byPOP[k.pop]
		if p == nil {
			p = &POPLoad{POP: k.pop}
			byPOP[k.pop] = p
		}
		p.Rate += l.util * c
		if l.seen.After(p.Seen) {
			p.Seen = l.seen
		}
	}
	out := make([]POPLoad, 0, len(byPOP))
	for _, p := range byPOP {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b POPLoad) int { return strings.Compare(a.POP, b.POP) })
	return out
}

// frontDoorLoad is the front door as the engine's default LoadSource, read on the tick's
// goroutine (gatherLoad).
func (e *Engine) frontDoorLoad() []POPLoad {
	return e.front.loads(e.now(), e.cfg.Shed.Stale, func(name string) float64 {
		p, _ := e.inv.POP(name)
		return p.Capacity.SessionsPerSecond
	})
}
