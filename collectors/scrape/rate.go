package scrape

import "time"

// Rate is the per-second increase of a counter from prev to cur over dt. A counter that
// went down was reset (the daemon restarted): its increase since the reset is unknown
// for this interval, so Rate reports 0 rather than a negative or a huge value.
func Rate(prev, cur float64, dt time.Duration) float64 {
	if dt <= 0 || cur < prev {
		return 0
	}
	return (cur - prev) / dt.Seconds()
}
