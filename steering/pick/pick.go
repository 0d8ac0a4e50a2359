// Package pick is the last step of the GeoDNS answer chain: a weighted random choice
// among the POPs that policy chose for a client region.
package pick

import (
	"math/rand/v2"
	"net/netip"
)

// Choice is one POP that may answer, with its steering weight and addresses.
type Choice struct {
	POP    string
	Weight float64
	V4     []netip.Addr
	V6     []netip.Addr
}

// Set is an immutable weighted set of choices; build it once per weight change and
// share it between goroutines answering queries.
type Set struct {
	Choices []Choice // only weight > 0
	cum     []float64
}

// NewSet keeps the choices with a positive weight.
func NewSet(choices []Choice) *Set {
	s := &Set{}
	total := 0.0
	for _, c := range choices {
		if c.Weight > 0 {
			total += c.Weight
			s.Choices = append(s.Choices, c)
			s.cum = append(s.cum, total)
		}
	}
	return s
}

// Pick returns a choice with probability proportional to its weight, or nil when the set
// is empty. Linear scan: a region is served by a handful of POPs.
func (s *Set) Pick() *Choice {
	if s == nil || len(s.Choices) == 0 {
		return nil
	}
	if len(s.Choices) == 1 {
		return &s.Choices[0]
	}
	x := rand.Float64() * s.cum[len(s.cum)-1]
	for i, c := range s.cum {
		if x < c {
			return &s.Choices[i]
		}
	}
	return &s.Choices[len(s.Choices)-1]
}
