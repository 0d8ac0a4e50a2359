package lab

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// The growth invariant reads a regression slope, not endpoints: a sawtooth on a flat line
// is flat, and a line climbing 6 MB/h under the same sawtooth is found climbing.
func TestSlopeSeesThroughSawtooth(t *testing.T) {
	for _, tc := range []struct {
		perHour float64
	}{{0}, {6}, {-3}} {
		var ts, ys []float64
		for i := range 720 { // an hour, every 5 s
			sec := float64(i * 5)
			saw := float64(i%12) * 4 // the GC's 48 MB sawtooth, a minute long
			ts, ys = append(ts, sec), append(ys, 500+saw+tc.perHour*sec/3600)
		}
		got, se := slope(ts, ys)
		if math.Abs(got-tc.perHour) > 2*se+0.5 {
			t.Errorf("slope %g MB/h ± %g, want %g", got, se, tc.perHour)
		}
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{0.4, 2.9, 0.6, 0.5, 0.7}
	if p := percentile(v, 0.5); p != 0.6 {
		t.Errorf("p50 %g", p)
	}
	if p := percentile(v, 0.99); p != 2.9 {
		t.Errorf("p99 %g", p)
	}
	if !math.IsNaN(percentile(nil, 0.5)) {
		t.Error("p50 of nothing is a number")
	}
}

// The report fails an invariant that did not hold, and its BENCH lines carry value/budget.
func TestReportBenchLines(t *testing.T) {
	r := &SoakReport{Rows: []SoakRow{
		{Name: "soak_detect_to_steer_p50", Invariant: "p50", Unit: "s", Budget: 1.5, Measured: 0.75, OK: true},
		{Name: "soak_calm_alerts_firing", Invariant: "calm alerts", Unit: "alerts", Budget: 0, Measured: 2, OK: false, Detail: "X"},
	}}
	var b bytes.Buffer
	r.Write(&b)
	for _, want := range []string{"BENCH soak_detect_to_steer_p50 0.75 s ratio=0.5\n", "BENCH soak_calm_alerts_firing 2 alerts ratio=inf\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	if f := r.Failed(); len(f) != 1 || f[0] != "calm alerts: X" {
		t.Errorf("failed %q", f)
	}
}
