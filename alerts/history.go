package alerts

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// KeyframeEvery is how often a still-firing alert is restated in the alert history, so
// that the alerts firing at an instant are found among the rows of the window of
// HistoryWindow before it, however long ago they started.
const KeyframeEvery = 5 * time.Minute

// HistoryWindow is how far back a reader of the alert history looks for the alerts firing
// at an instant: two keyframes, so a keyframe written a tick late is still inside. An
// alert whose last row is older was no longer reported (its ruler stopped).
const HistoryWindow = 2 * KeyframeEvery

// Recorder turns the firing sets a Source gives over time into pipeline.AlertState
// records: one when an alert starts firing, one when it resolves, and every firing alert
// again every KeyframeEvery. It is not safe for concurrent use; the ruler calls it from
// its evaluation loop.
type Recorder struct {
	app       pipeline.Appender
	collector string
	firing    map[string]Alert // by alertKey
	keyframe  time.Time        // when every firing alert was last restated
	pending   []pipeline.Record
}

// maxPending bounds the records kept while the pipeline refuses them (a full spool);
// past it the oldest go, and the next keyframe restates what still fires.
const maxPending = 10000

// NewRecorder records into app, naming collector as the records' source.
func NewRecorder(app pipeline.Appender, collector string) *Recorder {
	return &Recorder{app: app, collector: collector, firing: map[string]Alert{}}
}

// Observe appends what changed since the previous call, given the alerts firing at now.
// Records the pipeline refuses are kept and appended with the next call's, so a
// resolution is not lost to a moment of backpressure.
func (r *Recorder) Observe(ctx context.Context, now time.Time, firing []Alert) error {
	r.pending = append(r.pending, r.changes(now, firing)...)
	if len(r.pending) == 0 {
		return nil
	}
	// Bounded: the caller's loop also feeds the SLI series.
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := r.app.Append(actx, r.pending...); err != nil {
		if over := len(r.pending) - maxPending; over > 0 {
			r.pending = r.pending[over:]
		}
		return err
	}
	r.pending = nil
	return nil
}

func (r *Recorder) changes(now time.Time, firing []Alert) []pipeline.Record {
	keyframe := now.Sub(r.keyframe) >= KeyframeEvery
	if keyframe {
		r.keyframe = now
	}
	var out []pipeline.Record
	rec := func(a Alert, state string, key bool) {
		out = append(out, &pipeline.AlertState{M: pipeline.Meta{Time: now, Collector: r.collector},
			Name: a.Name, Severity: a.Severity, Labels: a.Labels, State: state, ActiveAt: a.ActiveAt, Keyframe: key})
	}
	cur := make(map[string]Alert, len(firing))
	for _, a := range firing {
		k := alertKey(a)
		cur[k] = a
		if _, was := r.firing[k]; !was {
			rec(a, pipeline.AlertFiring, false)
		} else if keyframe {
			rec(a, pipeline.AlertFiring, true)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.firing)) {
		if _, still := cur[k]; !still {
			rec(r.firing[k], pipeline.AlertResolved, false)
		}
	}
	r.firing = cur
	return out
}

// alertKey identifies an alert as Prometheus does: its name and labels.
func alertKey(a Alert) string {
	var b strings.Builder
	b.WriteString(a.Name)
	for _, k := range slices.Sorted(maps.Keys(a.Labels)) {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(a.Labels[k])
	}
	return b.String()
}
