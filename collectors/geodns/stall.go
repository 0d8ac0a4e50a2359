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
// every stallTick and wakes late was starved (CPU overload, a long pause, a frozen VM).
// A probe during which the process lost `min` or more that way measured the prober, not
// the POP: its timeout or its round trip includes the lost time. With every vantage in
// one process, counting it would fail or slow every POP at once. Lateness is summed over
// the probe, so that many short starvations count as one long stall does.
type stallWatch struct {
	min time.Duration // lateness within one probe that makes it inconclusive

	mu    sync.Mutex
	last  time.Time // the watch's last wake-up
	wakes [64]wake  // recent late wake-ups, a ring (3.2 s of wake-ups when all are late)
	next  int
}

// wake is one late wake-up: the watch slept from `from` to `to`, `late` longer than asked.
type wake struct {
	from, to time.Time
	late     time.Duration
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

// woke records a wake-up at now and says whether the gap since the last one was a stall
// on its own.
func (w *stallWatch) woke(now time.Time) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	from := w.last
	w.last = now
	late := now.Sub(from) - stallTick
	if late <= 0 {
		return 0, false
	}
	w.wakes[w.next] = wake{from, now, late}
	w.next = (w.next + 1) % len(w.wakes)
	return now.Sub(from), late >= w.min
}

// during says whether the process lost min or more to lateness within [from, to],
// counting a sleep of the watch still going on at now: the probe may be scheduled before
// the watch after the same stall.
func (w *stallWatch) during(from, to, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	var lost time.Duration
	if late := now.Sub(w.last) - stallTick; late > 0 && w.last.Before(to) {
		lost += late
	}
	for _, k := range w.wakes {
		if k.late > 0 && k.from.Before(to) && k.to.After(from) {
			lost += k.late
		}
	}
	return lost >= w.min
}
