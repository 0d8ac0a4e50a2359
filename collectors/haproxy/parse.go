package haproxy

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/meridianhq/meridian/collectors/scrape"
)

// Key names one frontend, backend or server.
type Key struct {
	Type   string // frontend, backend, server
	Proxy  string
	Server string // "" for a frontend or backend
}

// Row is what one read says about one frontend, backend or server: gauges as read,
// counters as totals (rates come from two reads).
type Row struct {
	Status      string
	CheckStatus string
	Sessions    uint64
	SessionMax  uint64
	Queue       uint64
	ResponseMs  float64
	// Counters.
	SessionsTotal float64
	BytesIn       float64
	BytesOut      float64
	HTTP4xx       float64
	HTTP5xx       float64
}

// Snapshot is one read of one HAProxy process.
type Snapshot map[Key]*Row

func (s Snapshot) row(k Key) *Row {
	r := s[k]
	if r == nil {
		r = &Row{}
		s[k] = r
	}
	return r
}

// ParseExposition reads the built-in Prometheus exporter's text (HAProxy 2.4+: `http-request
// use-service prometheus-exporter`). Bad lines are returned as errors naming source and
// line; the series around them are kept.
func ParseExposition(source string, b []byte) (Snapshot, []error) {
	snap := Snapshot{}
	errs := scrape.Exposition(source, b, func(name []byte) bool {
		return bytes.HasPrefix(name, []byte("haproxy_frontend_")) || bytes.HasPrefix(name, []byte("haproxy_backend_")) ||
			bytes.HasPrefix(name, []byte("haproxy_server_"))
	}, func(s scrape.Sample) {
		typ, metric, _ := strings.Cut(strings.TrimPrefix(s.Name, "haproxy_"), "_")
		k := Key{Type: typ, Proxy: s.Labels.Get("proxy")}
		if typ == "server" {
			k.Server = s.Labels.Get("server")
		}
		if k.Proxy == "" || (typ == "server" && k.Server == "") {
			return
		}
		v := s.Value
		gauge := func() uint64 {
			if math.IsNaN(v) || v < 0 {
				return 0 // HAProxy exports NaN for "no limit"
			}
			return uint64(v)
		}
		switch metric {
		case "status":
			if v == 1 {
				snap.row(k).Status = s.Labels.Get("state")
			}
		case "check_status":
			if v == 1 {
				snap.row(k).CheckStatus = s.Labels.Get("state")
			}
		case "current_sessions":
			snap.row(k).Sessions = gauge()
		case "limit_sessions":
			snap.row(k).SessionMax = gauge()
		case "current_queue":
			snap.row(k).Queue = gauge()
		case "response_time_average_seconds":
			if !math.IsNaN(v) {
				snap.row(k).ResponseMs = v * 1000
			}
		case "sessions_total":
			snap.row(k).SessionsTotal = v
		case "bytes_in_total":
			snap.row(k).BytesIn = v
		case "bytes_out_total":
			snap.row(k).BytesOut = v
		case "http_responses_total":
			switch s.Labels.Get("code") {
			case "4xx":
				snap.row(k).HTTP4xx = v
			case "5xx":
				snap.row(k).HTTP5xx = v
			}
		}
	})
	return snap, errs
}

// statTypes are show stat's type column: 0 frontend, 1 backend, 2 server (3, listeners, is
// left out: a frontend's totals already count its listeners).
var statTypes = map[string]string{"0": "frontend", "1": "backend", "2": "server"}

// ParseStat reads the stats socket's `show stat` CSV, for HAProxy without the exporter.
// Columns are found by the header's names, so versions that add columns still parse. A
// bad row is an error naming source and line and is skipped.
func ParseStat(source string, b []byte) (Snapshot, []error) {
	header, rest, _ := bytes.Cut(b, []byte("\n"))
	if !bytes.HasPrefix(header, []byte("# ")) {
		return nil, []error{fmt.Errorf("%s:1: not show stat output (no '# pxname,...' header)", source)}
	}
	col := map[string]int{}
	for i, name := range strings.Split(strings.TrimSpace(string(header[2:])), ",") {
		col[name] = i
	}
	for _, need := range []string{"pxname", "svname", "type", "scur", "stot", "bin", "bout", "status"} {
		if _, ok := col[need]; !ok {
			return nil, []error{fmt.Errorf("%s:1: show stat header lacks column %q", source, need)}
		}
	}
	snap := Snapshot{}
	var errs []error
	r := csv.NewReader(bytes.NewReader(rest))
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := r.FieldPos(0)
		line++ // after the header
		if err != nil {
			errs = append(errs, &scrape.LineError{Source: source, Line: line, Err: err})
			continue
		}
		if err := statRow(snap, col, rec); err != nil {
			errs = append(errs, &scrape.LineError{Source: source, Line: line, Err: err})
		}
	}
	return snap, errs
}

func statRow(snap Snapshot, col map[string]int, rec []string) error {
	field := func(name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	if len(rec) < len(col)-1 { // HAProxy ends each row with a comma, as the header
		return fmt.Errorf("%d fields, the header has %d", len(rec), len(col))
	}
	typ, ok := statTypes[field("type")]
	if !ok {
		if field("type") == "3" {
			return nil
		}
		return fmt.Errorf("unknown type %q", field("type"))
	}
	k := Key{Type: typ, Proxy: field("pxname")}
	if typ == "server" {
		k.Server = field("svname")
	}
	var bad error
	num := func(name string) float64 {
		s := field(name)
		if s == "" {
			return 0 // not applicable to this row's type
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil && bad == nil {
			bad = fmt.Errorf("column %s: %q is not a number", name, s)
		}
		return v
	}
	row := &Row{
		Status:        field("status"),
		CheckStatus:   strings.TrimPrefix(field("check_status"), "* "), // "* " marks a check in progress
		Sessions:      uint64(num("scur")),
		SessionMax:    uint64(num("slim")),
		Queue:         uint64(num("qcur")),
		ResponseMs:    num("rtime"),
		SessionsTotal: num("stot"),
		BytesIn:       num("bin"),
		BytesOut:      num("bout"),
		HTTP4xx:       num("hrsp_4xx"),
		HTTP5xx:       num("hrsp_5xx"),
	}
	if bad != nil {
		return bad
	}
	snap[k] = row
	return nil
}
