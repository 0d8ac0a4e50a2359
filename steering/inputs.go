package steering

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/meridianhq/meridian/alerts"
	"github.com/meridianhq/meridian/collectors/geodns"
	"github.com/meridianhq/meridian/pipeline"
)

// Inputs is everything one tick of the engine reads, with the clock. decide turns it,
// and the engine's own state, into weights; it is recorded every tick (SteeringInputs)
// so that Replay can feed the same inputs to a fresh engine.
type Inputs struct {
	Now       time.Time
	Cells     []geodns.Cell  // every cell of the matrix, sorted by vantage then POP
	Alerts    []alerts.Alert // firing, sorted
	Overrides []Override     // in force; decisions read Action, POP, Service, Region
	Load      []POPLoad      // each POP's last valid load, sorted by POP (capacity.go)
}

// keyframeEvery is how often a tick's inputs are recorded whole: a replay starts at a
// keyframe, and between them only changes are stored.
const keyframeEvery = time.Minute

// gather reads the inputs of one tick. Times lose their monotonic clock reading, so that
// decide compares wall-clock times only, as a replay of the stored times does.
func (e *Engine) gather() Inputs {
	in := Inputs{Now: e.now().Round(0), Cells: e.matrix.Cells(time.Time{}), Overrides: e.overrides.all(), Load: e.gatherLoad()}
	for i := range in.Cells {
		c := &in.Cells[i]
		c.LastSeen, c.LastOK = c.LastSeen.Round(0), c.LastOK.Round(0)
	}
	if e.alerts != nil {
		in.Alerts = slices.Clone(e.alerts.Firing())
	}
	for i := range in.Alerts {
		in.Alerts[i].ActiveAt = in.Alerts[i].ActiveAt.Round(0)
	}
	// Alerts fold into maps in order (alertState): a fixed order gives a fixed result.
	slices.SortFunc(in.Alerts, func(a, b alerts.Alert) int { return strings.Compare(alertID(a), alertID(b)) })
	return in
}

// inputsLog turns each tick's inputs into a SteeringInputs record of what changed.
type inputsLog struct {
	started   time.Time // the first tick
	keyframe  time.Time // the last keyframe
	cells     map[[2]string]geodns.Cell
	alerts    []alerts.Alert
	overrides []pipeline.SteeringOverride
	loads     map[string]POPLoad
}

func (l *inputsLog) record(in Inputs) *pipeline.SteeringInputs {
	r := &pipeline.SteeringInputs{M: pipeline.Meta{Time: in.Now, Collector: "steering"}}
	if l.started.IsZero() {
		l.started = in.Now
	}
	r.Started = l.started
	if l.cells == nil || in.Now.Sub(l.keyframe) >= keyframeEvery {
		r.Keyframe, l.keyframe, l.cells, l.loads = true, in.Now, map[[2]string]geodns.Cell{}, map[string]POPLoad{}
	}
	for _, x := range in.Load {
		if old, ok := l.loads[x.POP]; ok && old == x {
			continue
		}
		l.loads[x.POP] = x
		r.Loads = append(r.Loads, pipeline.SteeringLoad{POP: x.POP, Rate: x.Rate, Seen: x.Seen})
	}
	for _, c := range in.Cells {
		k := [2]string{c.Vantage, c.POP}
		if old, ok := l.cells[k]; ok && old == c {
			continue
		}
		l.cells[k] = c
		r.Cells = append(r.Cells, pipeline.SteeringCell{Vantage: c.Vantage, POP: c.POP, RTT: c.RTT, Failures: c.Failures, LastSeen: c.LastSeen, LastOK: c.LastOK})
	}
	if r.Keyframe || !slices.EqualFunc(in.Alerts, l.alerts, sameAlert) {
		l.alerts = in.Alerts
		r.AlertsChanged = true
		for _, a := range in.Alerts {
			r.Alerts = append(r.Alerts, pipeline.SteeringAlert{Name: a.Name, Severity: a.Severity, Labels: a.Labels, ActiveAt: a.ActiveAt})
		}
	}
	ovs := make([]pipeline.SteeringOverride, 0, len(in.Overrides))
	for _, o := range in.Overrides {
		ovs = append(ovs, pipeline.SteeringOverride{Action: o.Action, POP: o.POP, Service: o.Service, Region: o.Region, Source: o.Source})
	}
	if r.Keyframe || !slices.Equal(ovs, l.overrides) {
		l.overrides = ovs
		r.OverridesChanged, r.Overrides = true, ovs
	}
	return r
}

func sameAlert(a, b alerts.Alert) bool {
	return a.Name == b.Name && a.Severity == b.Severity && a.ActiveAt.Equal(b.ActiveAt) && maps.Equal(a.Labels, b.Labels)
}

// inputsState rebuilds each tick's Inputs from the recorded changes, in time order.
type inputsState struct {
	started   time.Time
	cells     map[[2]string]geodns.Cell
	alerts    []alerts.Alert
	overrides []Override
	loads     map[string]POPLoad
}

// apply folds r in and returns the tick's inputs; fresh is true when r belongs to another
// engine run than the previous record (state must start empty). ok is false while no
// keyframe of r's run has been seen: the changes before it cannot be completed.
func (s *inputsState) apply(r *pipeline.SteeringInputs) (in Inputs, fresh, ok bool) {
	if !r.Started.Equal(s.started) {
		if !r.Keyframe {
			return Inputs{}, false, false
		}
		*s = inputsState{started: r.Started}
		fresh = true
	}
	if r.Keyframe {
		s.cells, s.loads = map[[2]string]geodns.Cell{}, map[string]POPLoad{}
	}
	for _, l := range r.Loads {
		s.loads[l.POP] = POPLoad{POP: l.POP, Rate: l.Rate, Seen: l.Seen}
	}
	for _, c := range r.Cells {
		s.cells[[2]string{c.Vantage, c.POP}] = geodns.Cell{Vantage: c.Vantage, POP: c.POP, RTT: c.RTT, Failures: c.Failures, LastSeen: c.LastSeen, LastOK: c.LastOK}
	}
	if r.AlertsChanged {
		s.alerts = s.alerts[:0:0]
		for _, a := range r.Alerts {
			s.alerts = append(s.alerts, alerts.Alert{Name: a.Name, Severity: a.Severity, Labels: a.Labels, ActiveAt: a.ActiveAt})
		}
	}
	if r.OverridesChanged {
		s.overrides = s.overrides[:0:0]
		for _, o := range r.Overrides {
			s.overrides = append(s.overrides, Override{Action: o.Action, POP: o.POP, Service: o.Service, Region: o.Region, Source: o.Source})
		}
	}
	in = Inputs{Now: r.M.Time, Alerts: s.alerts, Overrides: s.overrides, Cells: make([]geodns.Cell, 0, len(s.cells))}
	for _, c := range s.cells {
		in.Cells = append(in.Cells, c)
	}
	slices.SortFunc(in.Cells, func(a, b geodns.Cell) int {
		return cmp.Or(cmp.Compare(a.Vantage, b.Vantage), cmp.Compare(a.POP, b.POP))
	})
	for _, l := range s.loads {
		in.Load = append(in.Load, l)
	}
	slices.SortFunc(in.Load, func(a, b POPLoad) int { return cmp.Compare(a.POP, b.POP) })
	return in, fresh, true
}
