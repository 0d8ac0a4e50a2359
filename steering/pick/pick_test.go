package pick

import (
	"math"
	"testing"
)

func TestPickFollowsWeights(t *testing.T) {
	s := NewSet([]Choice{{POP: "a", Weight: 3}, {POP: "b", Weight: 1}, {POP: "drained", Weight: 0}})
	if len(s.Choices) != 2 {
		t.Fatalf("drained POP kept: %+v", s.Choices)
	}
	n := map[string]int{}
	const draws = 40000
	for range draws {
		n[s.Pick().POP]++
	}
	if n["drained"] != 0 {
		t.Fatalf("drained POP picked %d times", n["drained"])
	}
	if got := float64(n["a"]) / draws; math.Abs(got-0.75) > 0.02 {
		t.Fatalf("share of a = %.3f, want 0.75±0.02", got)
	}
}

func TestPickEmpty(t *testing.T) {
	if c := NewSet(nil).Pick(); c != nil {
		t.Fatalf("empty set picked %+v", c)
	}
	var s *Set
	if s.Pick() != nil {
		t.Fatal("nil set picked")
	}
}
