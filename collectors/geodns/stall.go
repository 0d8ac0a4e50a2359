package geodns

import (
	"context"
	"sync"
	"time"
)

// stallTick is how often the stall watch wants to wake.
const stallTick = 50 * time.Millisecond

// maxExcused bounds how many probes in a row of one target stalls may excuse: a POP that
// really stopped answering while the prober keeps stalling is still judged, three fast
// re-probes later.
const maxExcused = 3

// stallWatch notices when this process was not running: a goroutine that wants to wake
// every stallTick and wakes much later was starved (CPU overload, a long pause, a frozen
// VM). A probe across such a stall measured the prober, not the POP: its timeout or its
// round trip includes the stall. With every vantage in one process, counting it would
// fail or slow every POP at once.
type stallWatch struct {
	min time.Duration // the shortest lateness that counts as a stall

	mu    sync.Mutex
	last  time.Time        // the watch's last wake-up
	spans [16][2]time.Time // recent stalls, a ring
	next  int
}

func newStallWatch(min time.Duration, now time.Time) *stallWatch {
	return &stallWatch{min: min, last: now}
}

func (w *stallWatch) run(ctx context.Context, onStall func(time.Duration)) {
	t := time.NewTicker(stallTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// time.Now, not the tick's own time: the wake-up is what was late.
			if d, stalled := w.woke(time.Now()); stalled {
				onStall(d)
			}
		}
	}
}

// woke records a wake-up at now and says whether the gap since the last one was a stall.
func (w *stallWatch) woke(now time.Time) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	from := w.last
	w.last = now
	if now.Sub(from)-stallTick < w.min {
		return 0, false
	}
	w.spans[w.next] = [2]time.Time{from, now}
	w.next = (w.next + 1) % len(w.spans)
	return now.Sub(from), true
}

// during says whether a stall overlapped [from, to], counting one still going on at now:
// the probe may be scheduled before the watch after the same stall.
func (w *stallWatch) during(from, to, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.last)-stallTick >= w.min && w.last.Before(to) {
		return true
	}
	for _, s := range w.spans {
		if !s[1].IsZero() && s[0].Before(to) && s[1].After(from) {
			return true
		}
	}
	return false
}
