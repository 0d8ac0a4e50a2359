package steering

import (
	"github.com/meridianhq/meridian/inventory"
)

// follow applies the live inventory's newest snapshot, if it changed since the last
// tick, and returns it (nil: no change, or one the engine refused). It runs at a tick
// boundary, before the tick's inputs are read, so decide sees one world for a whole tick
// and stays a function of its inputs and the engine's state.
func (e *Engine) follow() *inventory.Snapshot {
	if e.live == nil {
		return nil
	}
	snap := e.live.Snapshot()
	if snap == nil || snap.Version() == e.applied {
		return nil
	}
	e.applied = snap.Version()
	// On error the world keeps its last good shape; the next change is tried again.
	if err := e.inventoryApplied("engine", snap.Version(), e.applyInventory(snap.Inventory())); err != nil {
		return nil
	}
	return snap
}

// inventoryApplied logs and counts a part of steering refusing an inventory version, or
// records that it follows it now; it returns err.
func (e *Engine) inventoryApplied(part string, version uint64, err error) error {
	if err != nil {
		e.invRefused.WithLabelValues(part).Inc()
		e.log.Error("steering keeps its last good "+part+" table: the new inventory does not fit", "part", part, "version", version, "err", err)
		return err
	}
	e.invVersion.WithLabelValues(part).Set(float64(version))
	return nil
}

// applyInventory rebuilds the groups from inv. Groups and weights that still exist keep
// their state (weights, holds, ramps, RTT choices), so an unrelated change (a node added)
// changes no decision; removed ones are dropped with their series; new ones start at
// their target at the next tick (step's first sight). The answer table is rebuilt by
// that tick.
func (e *Engine) applyInventory(inv *inventory.Inventory) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	oldInv, oldGroups, oldRegions := e.inv, e.groups, e.regions
	e.inv = inv
	if err := e.buildGroups(); err != nil {
		e.inv, e.groups, e.regions = oldInv, oldGroups, oldRegions
		return err
	}
	prev := make(map[groupKey]*group, len(oldGroups))
	for _, g := range oldGroups {
		prev[groupKey{g.svc.Name, g.region.Name}] = g
	}
	keep := map[key]bool{}
	for _, g := range e.groups {
		k := groupKey{g.svc.Name, g.region.Name}
		if o := prev[k]; o != nil {
			g.pool, g.chosen, g.proposed, g.proposedAt = o.pool, o.chosen, o.proposed, o.proposedAt
			g.regret, g.demand, g.estimated = o.regret, o.demand, o.estimated
			delete(prev, k)
		}
		for _, p := range g.candidates {
			keep[key{g.svc.Name, g.region.Name, p}] = true
		}
	}
	for k := range prev {
		e.regret.DeleteLabelValues(k.svc, k.region)
		e.demandG.DeleteLabelValues(k.svc, k.region)
	}
	for k := range e.entries {
		if !keep[k] {
			delete(e.entries, k)
			e.weight.DeleteLabelValues(k.svc, k.region, k.pop)
		}
	}
	for _, p := range oldInv.POPs {
		if _, ok := inv.POP(p.Name); !ok {
			delete(e.down, p.Name)
			delete(e.popChanged, p.Name)
			delete(e.loads, p.Name)
			e.popDown.DeleteLabelValues(p.Name)
			e.utilG.DeleteLabelValues(p.Name)
			e.headroomG.DeleteLabelValues(p.Name)
		}
	}
	for _, p := range inv.POPs {
		if _, ok := oldInv.POP(p.Name); !ok {
			e.popDown.WithLabelValues(p.Name).Set(0)
		}
	}
	e.overrides.setInventory(inv)
	return nil
}

// inventory is the world the engine decides in, for the API's goroutines.
func (e *Engine) inventory() *inventory.Inventory {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inv
}
