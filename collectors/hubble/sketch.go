package hubble

import (
	"math"
	"sync"
	"time"
)

// latencySketch is a fixed log-bucketed histogram: 8 buckets per doubling from 1µs (each
// bucket about 9% wide, so a quantile is within ±4.5%), 256 buckets up to about 71 min.
// 1 KiB, allocated only for edges that carry L7 latency and pooled between intervals.
type latencySketch struct {
	n      uint64
	counts [sketchBuckets]uint32
}

const (
	sketchBuckets   = 256
	sketchPerDouble = 8
	sketchMin       = time.Microsecond
)

var sketchPool = sync.Pool{New: func() any { return new(latencySketch) }}

func newSketch() *latencySketch { return sketchPool.Get().(*latencySketch) }

func (s *latencySketch) release() {
	*s = latencySketch{}
	sketchPool.Put(s)
}

func (s *latencySketch) add(d time.Duration) {
	i := 0
	if d > sketchMin {
		i = int(sketchPerDouble * math.Log2(float64(d)/float64(sketchMin)))
	}
	s.counts[min(i, sketchBuckets-1)]++
	s.n++
}

// quantile returns the geometric middle of the bucket holding the q-th value.
func (s *latencySketch) quantile(q float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range s.counts {
		seen += uint64(c)
		if seen >= rank {
			return time.Duration(float64(sketchMin) * math.Exp2((float64(i)+0.5)/sketchPerDouble))
		}
	}
	return 0
}
