package steering

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// ReplayFormats are the output formats of Write.
var ReplayFormats = []string{"text", "json", "csv"}

// Write prints the result as text (decisions marked against live, then the summary),
// json (ReplayResult) or csv (one row per decision, difference and summary line, its
// first column saying which).
func (r *ReplayResult) Write(w io.Writer, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case "csv":
		return r.writeCSV(w)
	case "text", "":
		return r.writeText(w)
	}
	return fmt.Errorf("replay output %q: want text, json or csv", format)
}

func (r *ReplayResult) writeText(w io.Writer) error {
	conf := "live configuration"
	if r.Candidate {
		conf = "candidate configuration"
	}
	start := "warmed up from " + r.WarmupFrom.UTC().Format(time.RFC3339Nano)
	if r.FromEngineStart {
		start = "from the engine's start at " + r.WarmupFrom.UTC().Format(time.RFC3339Nano) + " (exact)"
	}
	fmt.Fprintf(w, "replay %s .. %s, %s, %s: %d ticks (%d of warm-up), %d decisions, %d live, %d differences\n\n",
		r.From.UTC().Format(time.RFC3339), r.To.UTC().Format(time.RFC3339), conf, start, r.Ticks, r.WarmupTicks, len(r.Decisions), len(r.Live), len(r.Differences))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\ttime\tservice\tregion\tpop\tweight\tcause\tregret_ms\treason")
	mark := map[string]string{}
	for _, d := range r.Differences {
		if d.Replayed != nil {
			mark[decisionKey(*d.Replayed)] = map[string]string{"replay_only": "+", "differs": "~"}[d.Kind]
		}
	}
	line := func(m string, d *Decision) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%g -> %g\t%s\t%.1f\t%s\n", m, d.Time.Format("2006-01-02T15:04:05.000Z"), d.Service, d.Region, d.POP, d.Old, d.New, d.Cause, d.RegretMs, d.Reason)
	}
	for i := range r.Decisions {
		line(mark[decisionKey(r.Decisions[i])], &r.Decisions[i])
	}
	for _, d := range r.Differences {
		if d.Kind != "replay_only" {
			line("-", d.Live) // what live decided instead
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\n(+ replay only, ~ differs from live, - live only)")
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "service\tregion\tchanges\tdrains\tminutes drained\tflaps\tresidency violations\tregret mean ms\tregret max ms\tlive changes\tlive drains\tlive flaps\t")
	for _, s := range r.Summary {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2f\t%d\t%d\t%.1f\t%.1f\t%d\t%d\t%d\t\n", s.Service, s.Region, s.WeightChanges, s.Drains, s.MinutesDrained, s.Flaps, s.ResidencyViolations, s.RegretMeanMs, s.RegretMaxMs, s.LiveWeightChanges, s.LiveDrains, s.LiveFlaps)
	}
	return tw.Flush()
}

func (r *ReplayResult) writeCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	dec := func(kind string, d *Decision) []string {
		return []string{kind, d.Time.Format(time.RFC3339Nano), d.Service, d.Region, d.POP, f(d.Old), f(d.New), d.Cause, d.Reason, f(d.RegretMs), f(d.Utilisation), f(d.Headroom)}
	}
	cw.Write([]string{"row", "time", "service", "region", "pop", "old_weight", "new_weight", "cause", "reason", "regret_ms", "utilisation", "headroom"})
	for i := range r.Decisions {
		cw.Write(dec("decision", &r.Decisions[i]))
	}
	for _, d := range r.Differences {
		if d.Replayed != nil {
			cw.Write(dec(d.Kind+":replayed", d.Replayed))
		}
		if d.Live != nil {
			cw.Write(dec(d.Kind+":live", d.Live))
		}
	}
	cw.Write([]string{"row", "service", "region", "weight_changes", "drains", "minutes_drained", "flaps", "residency_violations", "regret_mean_ms", "regret_max_ms", "live_weight_changes", "live_drains", "live_flaps"})
	for _, s := range r.Summary {
		cw.Write([]string{"summary", s.Service, s.Region, strconv.Itoa(s.WeightChanges), strconv.Itoa(s.Drains), f(s.MinutesDrained), strconv.Itoa(s.Flaps),
			strconv.Itoa(s.ResidencyViolations), f(s.RegretMeanMs), f(s.RegretMaxMs), strconv.Itoa(s.LiveWeightChanges), strconv.Itoa(s.LiveDrains), strconv.Itoa(s.LiveFlaps)})
	}
	cw.Flush()
	return cw.Error()
}
