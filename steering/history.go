package steering

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// Querier runs a query and returns its output in the given ClickHouse format
// (storage.Store).
type Querier interface {
	Query(ctx context.Context, sql, format string) ([]byte, error)
}

// NewHistory reads the steering_inputs and steering_decisions tables of database.
func NewHistory(q Querier, database string) History { return &chHistory{q: q, db: database} }

type chHistory struct {
	q  Querier
	db string
}

// Times travel as integer nanoseconds (milliseconds for decisions): exact, and free of
// any text format's time zone.
const inputsSQL = `SELECT toUnixTimestamp64Nano(time) AS t, toUnixTimestamp64Nano(started) AS s, keyframe AS k,
 cell_vantage AS cv, cell_pop AS cp, cell_rtt AS cr, cell_failures AS cf,
 arrayMap(x -> toUnixTimestamp64Nano(x), cell_last_seen) AS cs, arrayMap(x -> toUnixTimestamp64Nano(x), cell_last_ok) AS co,
 alerts_changed AS ac, alert_name AS an, alert_severity AS av, alert_labels AS al, arrayMap(x -> toUnixTimestamp64Nano(x), alert_active_at) AS aa,
 overrides_changed AS oc, override_action AS oa, override_pop AS op, override_service AS os, override_region AS og, override_source AS ou,
 load_pop AS lp, load_rate AS lr, arrayMap(x -> toUnixTimestamp64Nano(x), load_seen) AS ls
FROM %s.steering_inputs
WHERE collector = 'steering' AND time >= fromUnixTimestamp64Nano(%d) AND time <= fromUnixTimestamp64Nano(%d)
ORDER BY time
SETTINGS output_format_json_quote_64bit_integers = 0`

type inputsRow struct {
	T, S   int64
	K      bool
	CV, CP []string
	CR     []int64
	CF     []int
	CS, CO []int64
	AC     bool
	AN, AV []string
	AL     []map[string]string
	AA     []int64
	OC     bool
	OA, OP []string
	OS, OG []string
	OU     []string
	LP     []string
	LR     []float64
	LS     []int64
}

// nanoTime is the inverse of the stored form: ClickHouse stores Go's zero time (a cell
// never answered) as the epoch.
func nanoTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func (h *chHistory) Inputs(ctx context.Context, from, to time.Time) ([]*pipeline.SteeringInputs, error) {
	out, err := h.q.Query(ctx, fmt.Sprintf(inputsSQL, h.db, from.UnixNano(), to.UnixNano()), "JSONEachRow")
	if err != nil {
		return nil, err
	}
	var recs []*pipeline.SteeringInputs
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var r inputsRow
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("steering_inputs row %d: %w", len(recs)+1, err)
		}
		if len(r.CP) != len(r.CV) || len(r.CR) != len(r.CV) || len(r.CF) != len(r.CV) || len(r.CS) != len(r.CV) || len(r.CO) != len(r.CV) ||
			len(r.AV) != len(r.AN) || len(r.AL) != len(r.AN) || len(r.AA) != len(r.AN) ||
			len(r.OP) != len(r.OA) || len(r.OS) != len(r.OA) || len(r.OG) != len(r.OA) || len(r.OU) != len(r.OA) ||
			len(r.LR) != len(r.LP) || len(r.LS) != len(r.LP) {
			return nil, fmt.Errorf("steering_inputs row %d: arrays of unequal length", len(recs)+1)
		}
		rec := &pipeline.SteeringInputs{M: pipeline.Meta{Time: nanoTime(r.T), Collector: "steering"}, Started: nanoTime(r.S), Keyframe: r.K,
			AlertsChanged: r.AC, OverridesChanged: r.OC}
		for i := range r.CV {
			rec.Cells = append(rec.Cells, pipeline.SteeringCell{Vantage: r.CV[i], POP: r.CP[i], RTT: time.Duration(r.CR[i]), Failures: r.CF[i], LastSeen: nanoTime(r.CS[i]), LastOK: nanoTime(r.CO[i])})
		}
		for i := range r.AN {
			rec.Alerts = append(rec.Alerts, pipeline.SteeringAlert{Name: r.AN[i], Severity: r.AV[i], Labels: r.AL[i], ActiveAt: nanoTime(r.AA[i])})
		}
		for i := range r.OA {
			rec.Overrides = append(rec.Overrides, pipeline.SteeringOverride{Action: r.OA[i], POP: r.OP[i], Service: r.OS[i], Region: r.OG[i], Source: r.OU[i]})
		}
		for i := range r.LP {
			rec.Loads = append(rec.Loads, pipeline.SteeringLoad{POP: r.LP[i], Rate: r.LR[i], Seen: nanoTime(r.LS[i])})
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

const decisionsSQL = `SELECT toUnixTimestamp64Milli(time) AS t, service, client_region, pop, old_weight, new_weight, cause, reason, regret_ms, utilisation, headroom
FROM %s.steering_decisions
WHERE collector = 'steering' AND time >= fromUnixTimestamp64Milli(%d) AND time <= fromUnixTimestamp64Milli(%d)
ORDER BY time, service, client_region, pop
SETTINGS output_format_json_quote_64bit_integers = 0`

func (h *chHistory) Decisions(ctx context.Context, from, to time.Time) ([]*pipeline.SteeringDecision, error) {
	out, err := h.q.Query(ctx, fmt.Sprintf(decisionsSQL, h.db, from.Truncate(time.Millisecond).UnixMilli(), to.UnixMilli()), "JSONEachRow")
	if err != nil {
		return nil, err
	}
	var recs []*pipeline.SteeringDecision
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var r struct {
			T        int64   `json:"t"`
			Service  string  `json:"service"`
			Region   string  `json:"client_region"`
			POP      string  `json:"pop"`
			Old      float64 `json:"old_weight"`
			New      float64 `json:"new_weight"`
			Cause    string  `json:"cause"`
			Reason   string  `json:"reason"`
			RegretMs float64 `json:"regret_ms"`
			Util     float64 `json:"utilisation"`
			Headroom float64 `json:"headroom"`
		}
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("steering_decisions row %d: %w", len(recs)+1, err)
		}
		recs = append(recs, &pipeline.SteeringDecision{M: pipeline.Meta{Time: time.UnixMilli(r.T).UTC(), Collector: "steering"}, Service: r.Service, ClientRegion: r.Region,
			POP: r.POP, OldWeight: r.Old, NewWeight: r.New, Cause: r.Cause, Reason: r.Reason, RegretMs: r.RegretMs,
			Utilisation: r.Util, Headroom: r.Headroom})
	}
	return recs, nil
}
