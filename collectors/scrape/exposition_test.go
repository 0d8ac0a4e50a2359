package scrape

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestExpositionKeepsGoodLinesAroundBadOnes(t *testing.T) {
	in := strings.Join([]string{
		"# HELP a_total Things.",
		"# TYPE a_total counter",
		`a_total{x="1"} 1`,
		`a_total{x="2" 2`, // line 4: unclosed brace
		"",
		`a_total{x="3"} 3`,
		"garbage here",     // line 7
		"not_a_number{} x", // line 8
		`b 4.5`,
	}, "\n")
	var got []string
	errs := Exposition("test", []byte(in), nil, func(s Sample) {
		got = append(got, s.Name+"/"+s.Labels.Get("x"))
	})
	want := []string{"a_total/1", "a_total/3", "b/"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("samples %v, want %v", got, want)
	}
	var lines []int
	for _, err := range errs {
		var le *LineError
		if !errors.As(err, &le) || le.Source != "test" {
			t.Fatalf("error %v is not a LineError from test", err)
		}
		lines = append(lines, le.Line)
	}
	if len(lines) != 3 || lines[0] != 4 || lines[1] != 7 || lines[2] != 8 {
		t.Fatalf("bad lines %v (errors %v), want [4 7 8]", lines, errs)
	}
}

func TestExpositionFiltersByName(t *testing.T) {
	n := 0
	errs := Exposition("t", []byte("a 1\nb 2\nc{l=\"v\"} 3\n"), func(name []byte) bool { return string(name) != "b" }, func(Sample) { n++ })
	if len(errs) != 0 || n != 2 {
		t.Fatalf("got %d samples, errs %v; want 2, none", n, errs)
	}
}

func TestRate(t *testing.T) {
	if r := Rate(100, 300, 2*time.Second); r != 100 {
		t.Fatalf("rate %v, want 100", r)
	}
	if r := Rate(300, 10, time.Second); r != 0 {
		t.Fatalf("rate across a reset %v, want 0", r)
	}
}

// FuzzExposition checks that recovery always makes progress: bad lines are reported in
// increasing order, inside the input, and every good line after a bad one still passes.
func FuzzExposition(f *testing.F) {
	f.Add([]byte("a 1\nb{ 2\nc 3\n"))
	f.Add([]byte("# TYPE x counter\nx_total 1\n\n\n{bad\n"))
	f.Add([]byte("\x00")) // textparse reads NUL as the end of input
	f.Add([]byte("\v"))   // not blank to textparse
	f.Fuzz(func(t *testing.T, b []byte) {
		lines := 1 + strings.Count(string(b), "\n")
		prev := 0
		errs := Exposition("fuzz", b, nil, func(Sample) {})
		for _, err := range errs {
			var le *LineError
			if !errors.As(err, &le) || le.Line <= prev || le.Line > lines {
				t.Fatalf("error %v out of order or range (previous line %d, %d lines)", err, prev, lines)
			}
			prev = le.Line
		}
		// A good line appended after whatever came before must come through.
		var last string
		Exposition("fuzz", append(append([]byte{}, b...), "\nzz_fuzz_tail 7\n"...), nil, func(s Sample) { last = s.Name })
		if last != "zz_fuzz_tail" {
			t.Fatalf("the good line after %q was lost (last sample %q)", b, last)
		}
	})
}
