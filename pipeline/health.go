package pipeline

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// health is what readiness needs to know from the pipeline: whether the spool can take
// blocks, and for how long each kind's inserts have been failing. It only records: the
// pipeline keeps retrying and spooling as before.
type health struct {
	mu         sync.Mutex
	spoolErr   error // the last spool write's error; nil once a write succeeds
	spoolSince time.Time
	failing    map[Kind]*insertFailure
}

type insertFailure struct {
	since    time.Time
	attempts int
	last     error
}

// spoolWrite records a spool write's outcome.
func (h *health) spoolWrite(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil:
		h.spoolErr = nil
	case h.spoolErr == nil:
		h.spoolErr, h.spoolSince = err, time.Now()
	default:
		h.spoolErr = err
	}
}

// insert records an insert attempt's outcome for kind k: nil when the block was stored.
// A block rejected for good counts as a failure too: storage that refuses every block is
// as unable to keep records as storage that is down.
func (h *health) insert(k Kind, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		delete(h.failing, k)
		return
	}
	f := h.failing[k]
	if f == nil {
		if h.failing == nil {
			h.failing = map[Kind]*insertFailure{}
		}
		f = &insertFailure{since: time.Now()}
		h.failing[k] = f
	}
	f.attempts++
	f.last = err
}

// Health reports why the pipeline cannot keep records safe, nil when it can: the spool's
// last write failed (a full or read-only disk: new blocks live in memory only), or a
// kind's inserts have failed for at least not_ready_after without one success (storage
// down or refusing; blocks pile up in the spool). It is meant for /readyz.
func (p *Pipeline) Health() error {
	h := &p.health
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	if h.spoolErr != nil {
		errs = append(errs, fmt.Errorf("spool %s cannot write since %s: %w", p.cfg.Spool.Path, h.spoolSince.UTC().Format(time.RFC3339), h.spoolErr))
	}
	now := time.Now()
	for _, k := range slices.Sorted(maps.Keys(h.failing)) {
		f := h.failing[k]
		if d := now.Sub(f.since); d >= p.cfg.NotReadyAfter {
			errs = append(errs, fmt.Errorf("%s inserts failing for %s (%d attempts, none succeeded): %w", k, d.Round(time.Second), f.attempts, f.last))
		}
	}
	return errors.Join(errs...)
}
