package geodns

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// Matrix is the live vantage × POP view built from health probes (tcp, http, icmp):
// a smoothed RTT and the run of consecutive failures per method. DNS probes measure the
// authoritative server, not the POP, so they do not enter it. The prober keeps one for
// its own vantage; steering keeps one fed by every vantage's records.
type Matrix struct {
	mu    sync.RWMutex
	cells map[cellKey]*cell
}

type cellKey struct{ vantage, pop string }

type cell struct {
	rtt      time.Duration // EWMA over successful probes
	fails    map[string]int
	lastSeen time.Time
	lastOK   time.Time
}

// Cell is one vantage's current view of one POP.
type Cell struct {
	Vantage  string
	POP      string
	RTT      time.Duration // smoothed; 0 when never measured
	Failures int           // longest run of consecutive failures among the methods
	LastSeen time.Time
	LastOK   time.Time
}

// rttAlpha weighs a new sample in the RTT average: fast enough to follow a real move
// within a few probes, slow enough that one slow probe does not reorder POPs.
const rttAlpha = 0.3

// NewMatrix returns an empty matrix.
func NewMatrix() *Matrix { return &Matrix{cells: map[cellKey]*cell{}} }

// IsHealthProbe reports whether a probe says something about the POP itself.
func IsHealthProbe(p *pipeline.Probe) bool {
	return p.POP != "" && p.Vantage != "" && (p.Method == "tcp" || p.Method == "http" || p.Method == "icmp")
}

// Observe folds one probe into the matrix; non-health probes are ignored.
func (m *Matrix) Observe(p *pipeline.Probe) {
	if !IsHealthProbe(p) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := cellKey{p.Vantage, p.POP}
	c := m.cells[k]
	if c == nil {
		c = &cell{fails: map[string]int{}}
		m.cells[k] = c
	}
	if p.M.Time.After(c.lastSeen) {
		c.lastSeen = p.M.Time
	}
	if !p.Success {
		c.fails[p.Method]++
		return
	}
	c.fails[p.Method] = 0
	if p.M.Time.After(c.lastOK) {
		c.lastOK = p.M.Time
	}
	// ICMP RTT is the purest path measure, but TCP/HTTP are what users feel; all count.
	if c.rtt == 0 {
		c.rtt = p.RTT
	} else {
		c.rtt = time.Duration(rttAlpha*float64(p.RTT) + (1-rttAlpha)*float64(c.rtt))
	}
}

// Cells returns every cell seen at or after since (all when since is zero), sorted by
// vantage then POP.
func (m *Matrix) Cells(since time.Time) []Cell {
	m.mu.RLock()
	out := make([]Cell, 0, len(m.cells))
	for k, c := range m.cells {
		if c.lastSeen.Before(since) {
			continue
		}
		worst := 0
		for _, n := range c.fails {
			worst = max(worst, n)
		}
		out = append(out, Cell{Vantage: k.vantage, POP: k.pop, RTT: c.rtt, Failures: worst, LastSeen: c.lastSeen, LastOK: c.lastOK})
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b Cell) int {
		return cmp.Or(cmp.Compare(a.Vantage, b.Vantage), cmp.Compare(a.POP, b.POP))
	})
	return out
}

// POPHealth is the quorum verdict on one POP.
type POPHealth struct {
	POP      string
	Vantages int // vantages that reported recently
	Failing  int // of those, how many see FailThreshold or more consecutive failures
	Down     bool
}

// Health judges every POP seen since `since`: a POP is down when at least `quorum`
// reporting vantages (0 = a majority) each see `threshold` consecutive failures. Requiring
// a quorum keeps one vantage's broken uplink from draining a POP for everyone.
func (m *Matrix) Health(since time.Time, threshold, quorum int) map[string]POPHealth {
	return HealthOf(m.Cells(since), threshold, quorum)
}

// HealthOf is Health over given cells (those the caller counts as recent), so that a
// recorded view can be judged again.
func HealthOf(cells []Cell, threshold, quorum int) map[string]POPHealth {
	out := map[string]POPHealth{}
	for _, c := range cells {
		h := out[c.POP]
		h.POP = c.POP
		h.Vantages++
		if c.Failures >= threshold {
			h.Failing++
		}
		out[c.POP] = h
	}
	for pop, h := range out {
		need := quorum
		if need <= 0 {
			need = h.Vantages/2 + 1
		}
		h.Down = h.Failing >= need
		out[pop] = h
	}
	return out
}
