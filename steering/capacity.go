package steering

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/meridianhq/meridian/inventory"
)

// Capacity-aware steering (README.md, "Capacity"). Each POP's measured load (new sessions
// per second, from its front door) is compared with its inventory capacity: a POP planned
// above the low watermark sheds new traffic, the shed part and what a drain displaces
// spread over the region's other eligible POPs by their headroom under the high
// watermark, and a region with nowhere else to go keeps what it has.

// POPLoad is one POP's measured load: new sessions per second (the unit of the inventory's
// capacity.sessions_per_second) and when it was measured.
type POPLoad struct {
	POP  string
	Rate float64
	Seen time.Time
}

// LoadSource gives the latest measured load of each POP it knows (collectors/haproxy).
// A POP it stops reporting keeps its last load, which goes stale (ShedConfig.Stale).
type LoadSource interface {
	Load() []POPLoad
}

// LoadFunc adapts a function to a LoadSource.
type LoadFunc func() []POPLoad

func (f LoadFunc) Load() []POPLoad { return f() }

// CauseCapacity marks weights shaped by capacity: shed between the watermarks, or spread
// by headroom.
const CauseCapacity = "capacity"

// capacityDeadband: a shaped target moves only when some weight of its group would move
// by more than this fraction of the POP's base weight. Demand estimates wander with every
// measurement; the weights must not.
const capacityDeadband = 0.05

// demandSmoothing is the time constant of the demand estimate: a load's noise from one
// measurement to the next must not reach the weights, a step in demand does within a
// minute.
const demandSmoothing = 15 * time.Second

// demandFloor keeps an estimate off zero: the estimate is multiplicative, and a zero
// would never grow again. It is also the prior of a group never estimated: the implicit
// default region's is a thousandth of it, so that load the named regions can explain is
// theirs (the default region shares every POP with them and cannot be told apart).
const demandFloor = 1e-6

func (g *group) prior() float64 {
	if g.implicit {
		return max(g.demand, demandFloor/1000)
	}
	return max(g.demand, demandFloor)
}

// gatherLoad reads the load source into the engine's last-known loads and returns them
// all, sorted by POP. Loads naming no inventory POP, with a negative or non-finite rate or
// no time, are ignored, counted and logged once per POP and reason.
func (e *Engine) gatherLoad() []POPLoad {
	if e.load == nil {
		return nil
	}
	for _, l := range e.load.Load() {
		reason := ""
		switch _, ok := e.inv.POP(l.POP); {
		case !ok:
			reason = "unknown_pop"
		case l.Rate < 0 || math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) || l.Seen.IsZero():
			reason = "invalid"
		}
		if reason != "" {
			e.loadIgnored.WithLabelValues(reason).Inc()
			// Logged once per reason and POP, and for a bounded number of names: a source
			// inventing names must not grow the engine.
			if k := reason + "\x00" + l.POP; !e.loadWarned[k] && len(e.loadWarned) < 100 {
				e.loadWarned[k] = true
				e.log.Warn("steering: load ignored", "reason", reason, "pop", l.POP, "rate", l.Rate, "seen", l.Seen)
			}
			continue
		}
		e.loads[l.POP] = POPLoad{POP: l.POP, Rate: l.Rate, Seen: l.Seen.Round(0)}
	}
	out := make([]POPLoad, 0, len(e.loads))
	for _, l := range e.loads {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b POPLoad) int { return strings.Compare(a.POP, b.POP) })
	return out
}

// popView is one POP as one tick's capacity pass sees it. Rates are sessions per second.
type popView struct {
	capacity  float64 // 0: unknown
	load      float64
	measured  bool    // load within Shed.Stale
	preferred float64 // the demand the groups' RTT choices put on it
	keep      float64 // the fraction of preferred it keeps (shed factor)
	room      float64 // headroom left under the high watermark for spreading into it
}

func (v *popView) known() bool { return v.capacity > 0 && v.measured }

// utilisation and headroom are what a decision records: measured, not planned.
func (v *popView) utilisation() float64 {
	if v == nil || !v.known() {
		return -1
	}
	return v.load / v.capacity
}

func (v *popView) headroom(high float64) float64 {
	if v == nil || !v.known() {
		return 0
	}
	return v.capacity*high - v.load
}

// keep is the fraction of its preferred demand a POP keeps at utilisation rho =
// preferred/capacity. NS1's Shed Load rule scales a POP's weight linearly from 1 at the
// low watermark to Floor at the high one, by the utilisation that weight produces; keep
// is that rule's fixed point, k = f(k·rho), computed from the demand estimate instead of
// reached by oscillating through measurements. With Floor 0 the kept load k·rho stays
// below High however large rho is.
func (c ShedConfig) keep(rho float64) float64 {
	if rho <= c.Low {
		return 1
	}
	a := (1 - c.Floor) / (c.High - c.Low)
	return max(c.Floor, (1+a*c.Low)/(1+a*rho))
}

// viewPOPs builds every POP's view from its capacity and this tick's loads.
func (e *Engine) viewPOPs(now time.Time, loads []POPLoad) map[string]*popView {
	views := make(map[string]*popView, len(e.inv.POPs))
	for _, p := range e.inv.POPs {
		views[p.Name] = &popView{capacity: p.Capacity.SessionsPerSecond, keep: 1}
	}
	for _, l := range loads {
		if v := views[l.POP]; v != nil && now.Sub(l.Seen) <= e.cfg.Shed.Stale {
			v.load, v.measured = l.Rate, true
		}
	}
	return views
}

// share is a group's current traffic share at a POP: its weight over the group's total.
func (e *Engine) shares(g *group) map[string]float64 {
	var sum float64
	for _, p := range g.candidates {
		if en := e.entries[key{g.svc.Name, g.region.Name, p}]; en != nil {
			sum += en.w
		}
	}
	out := map[string]float64{}
	if sum == 0 {
		return out
	}
	for _, p := range g.candidates {
		if en := e.entries[key{g.svc.Name, g.region.Name, p}]; en != nil && en.w > 0 {
			out[p] = en.w / sum
		}
	}
	return out
}

// estimateDemand updates each group's demand (sessions per second) from the load each
// POP carried, split among the groups it serves by their current traffic shares there,
// weighted by their previous estimates: one step of Richardson–Lucy, whose fixed point
// explains every measured load. A POP informs it only while its load is fresh and no
// weight to it has changed for Shed.Settle, so that its load reflects the weights used to
// split it; a group none of whose POPs informs it keeps its estimate (a drained region's
// demand is the one it had before the drain). Groups served by exactly the same POPs in
// the same proportions cannot be told apart: their sum is right, its split follows the
// previous estimates (equal at start), until the plan moves one of them and a settled
// measurement tells them apart. Each estimate is smoothed over demandSmoothing, a tick's
// evidence weighing the time since the previous tick: ticks in which no POP informed a
// group (a settle after a failover, stale loads) add nothing, so the first 1 s rate after
// them moves the estimate as much as any other tick's, not as if it had held all along.
// Sums run in inventory order: the same inputs give the same bits.
func (e *Engine) estimateDemand(now time.Time, views map[string]*popView) {
	dt := now.Sub(e.lastTick)
	if e.lastTick.IsZero() {
		dt = 0
	}
	e.lastTick = now
	if !slices.ContainsFunc(e.inv.POPs, func(p inventory.POP) bool { return views[p.Name].measured }) {
		return // no load source, or every load stale: nothing to learn, spare the work
	}
	shares := make([]map[string]float64, len(e.groups))
	for i, g := range e.groups {
		shares[i] = e.shares(g)
	}
	ratio := map[string]float64{} // measured load over the load the estimates explain
	for _, p := range e.inv.POPs {
		v := views[p.Name]
		if !v.measured || now.Sub(e.popChanged[p.Name]) < e.cfg.Shed.Settle {
			continue
		}
		var explained float64
		for i, g := range e.groups {
			explained += g.prior() * shares[i][p.Name]
		}
		if explained > 0 {
			ratio[p.Name] = v.load / explained
		}
	}
	for i, g := range e.groups {
		var num, den float64
		for _, p := range g.candidates {
			if r, ok := ratio[p]; ok && shares[i][p] > 0 {
				num += shares[i][p] * r
				den += shares[i][p]
			}
		}
		if den == 0 {
			continue
		}
		est := g.prior() * num / den
		if g.estimated.IsZero() {
			g.demand = est
		} else {
			g.demand += (est - g.demand) * -math.Expm1(-float64(dt)/float64(demandSmoothing))
		}
		g.estimated = now
		g.demandG.Set(g.demand)
	}
}

// shape applies capacity to the targets of every group (targets[i] belongs to
// e.groups[i]), in place. Only groups whose weights come from the RTT choice are shaped:
// a pin, a fail-open and a group with no demand estimate are left as they are. A POP
// under a ticket-severity SLO burn receives no spread load.
func (e *Engine) shape(views map[string]*popView, targets []map[string]target, tickets map[string]string) {
	c := e.cfg.Shed
	shaped := make([]bool, len(e.groups))
	x := make([]map[string]float64, len(e.groups)) // share of each group's demand its targets put on each POP
	for i, g := range e.groups {
		if g.demand <= demandFloor {
			continue // no demand to place
		}
		x[i] = targetShares(g, targets[i])
		for _, p := range g.candidates {
			views[p].preferred += g.demand * x[i][p]
		}
		shaped[i] = true
		for _, t := range targets[i] {
			if t.w > 0 && (t.cause == CauseOverride || t.cause == CauseFailOpen) {
				shaped[i] = false // a pin or a fail-open: its load counts, its weights stay
			}
		}
	}
	for _, p := range e.inv.POPs {
		v := views[p.Name]
		if v.known() {
			v.keep = c.keep(v.preferred / v.capacity)
			v.room = max(0, v.capacity*c.High-v.keep*v.preferred)
		}
	}
	for i, g := range e.groups {
		if !shaped[i] {
			continue
		}
		var shed float64 // what this group's POPs shed of it
		urgent := false  // a POP of its choice would be over the high watermark
		for _, p := range g.candidates {
			v := views[p]
			shed += g.demand * x[i][p] * (1 - v.keep)
			if x[i][p] > 0 && v.known() && v.preferred > v.capacity*c.High {
				urgent = true
			}
		}
		if shed <= 0 {
			e.deadband(g, targets[i])
			continue
		}
		var into []string // eligible POPs the RTT choice left out, with headroom
		var room float64
		for _, p := range g.candidates {
			_, ticket := alertFor(tickets, g.svc.Name, p)
			if t := targets[i][p]; t.w == 0 && t.cause == CauseRTT && views[p].room > 0 && !ticket {
				into = append(into, p)
				room += views[p].room
			}
		}
		moved := min(shed, room)
		back := shed - moved // nowhere to go: it stays where the RTT choice put it
		var total float64    // the group's target weights, kept as they sum
		for _, p := range g.candidates {
			total += targets[i][p].w
		}
		var spread []string
		for _, p := range into {
			m := moved * views[p].room / room
			views[p].room -= m
			spread = append(spread, fmt.Sprintf("%s %.0f/s", p, m))
			targets[i][p] = target{total * m / g.demand, CauseCapacity, "", urgent}
		}
		for _, p := range g.candidates {
			if x[i][p] == 0 {
				continue
			}
			v := views[p]
			off := g.demand * x[i][p] * (1 - v.keep)
			kept := g.demand*x[i][p] - off + back*off/shed
			if off == 0 {
				continue
			}
			why := fmt.Sprintf("shedding: %s's RTT choices plan it at %.2f of capacity (watermarks %.2f-%.2f); it keeps %.0f%% of this region's %.0f/s",
				p, v.preferred/v.capacity, c.Low, c.High, 100*kept/(g.demand*x[i][p]), g.demand*x[i][p])
			if back > 0 {
				why += fmt.Sprintf("; %.0f/s of the region's shed stays: no other allowed POP has headroom", back)
			}
			targets[i][p] = target{total * kept / g.demand, CauseCapacity, why, urgent}
		}
		why := fmt.Sprintf("spread by headroom: %.0f/s of this region's %.0f/s shed by its nearest POPs over %s", moved, g.demand, strings.Join(spread, ", "))
		for _, p := range into {
			t := targets[i][p]
			t.reason = why
			targets[i][p] = t
		}
		e.deadband(g, targets[i])
	}
}

// targetShares is each candidate's share of its group's target weight.
func targetShares(g *group, t map[string]target) map[string]float64 {
	var sum float64
	for _, p := range g.candidates {
		sum += t[p].w
	}
	out := map[string]float64{}
	for _, p := range g.candidates {
		if sum > 0 {
			out[p] = t[p].w / sum
		}
	}
	return out
}

// deadband keeps a group's previous targets while none would move by more than
// capacityDeadband of its POP's base weight: small wanderings of the demand estimate, and
// a load hovering at the low watermark, move no weight. It applies only between targets
// of the RTT choice and of capacity: a drain, a hold or an alert is never held back.
func (e *Engine) deadband(g *group, t map[string]target) {
	for _, p := range g.candidates {
		en := e.entries[key{g.svc.Name, g.region.Name, p}]
		if en == nil || (t[p].cause != CauseRTT && t[p].cause != CauseCapacity) || (en.cause != CauseRTT && en.cause != CauseCapacity) ||
			math.Abs(en.target-t[p].w) > capacityDeadband*e.baseWeight(p) {
			return
		}
	}
	for _, p := range g.candidates {
		x := t[p]
		x.w = e.entries[key{g.svc.Name, g.region.Name, p}].target
		t[p] = x
	}
}

// showCapacity exports each POP's measured utilisation and headroom; unknown ones have
// no series.
func (e *Engine) showCapacity(views map[string]*popView) {
	for _, p := range e.inv.POPs {
		if v := views[p.Name]; v.known() {
			e.utilG.WithLabelValues(p.Name).Set(v.utilisation())
			e.headroomG.WithLabelValues(p.Name).Set(v.headroom(e.cfg.Shed.High))
		} else {
			e.utilG.DeleteLabelValues(p.Name)
			e.headroomG.DeleteLabelValues(p.Name)
		}
	}
}
