package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The parts of Grafana's dashboard model Meridian's dashboards use.
type dashboard struct {
	file          string
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Tags          []string
	Links         []link `json:"links"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []annotation `json:"list"`
	} `json:"annotations"`
	Panels []panel `json:"panels"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type link struct {
	Title string `json:"title"`
	Type  string `json:"type"`
	URL   string `json:"url"`
	Tags  []string
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Datasource *dsRef          `json:"datasource"`
	Query      json.RawMessage `json:"query"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	Current    struct {
		Value json.RawMessage `json:"value"`
	} `json:"current"`
}

// queryText is a variable's query: a string, or an object with rawSql (ClickHouse) or
// query (Prometheus).
func (v variable) queryText() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct{ RawSQL, Query string }
	json.Unmarshal(v.Query, &o)
	return o.RawSQL + o.Query
}

type annotation struct {
	Name       string `json:"name"`
	BuiltIn    int    `json:"builtIn"`
	Datasource *dsRef `json:"datasource"`
	Target     target `json:"target"`
}

type target struct {
	RefID      string          `json:"refId"`
	Datasource *dsRef          `json:"datasource"`
	EditorType string          `json:"editorType"`
	QueryType  string          `json:"queryType"`
	Format     json.RawMessage `json:"format"` // a number for ClickHouse, a name for Prometheus
	RawSQL     string          `json:"rawSql"`
	Expr       string          `json:"expr"`
}

type panel struct {
	ID          int      `json:"id"`
	Type        string   `json:"type"`
	Title       string   `json:"title"`
	Datasource  *dsRef   `json:"datasource"`
	Targets     []target `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit       string          `json:"unit"`
			Thresholds json.RawMessage `json:"thresholds"`
			Links      []link          `json:"links"`
		} `json:"defaults"`
		Overrides []struct {
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
	Panels []panel `json:"panels"` // collapsed rows
}

const (
	clickhouseType = "grafana-clickhouse-datasource"
	prometheusType = "prometheus"
)

// load reads every shipped dashboard.
func load() ([]*dashboard, error) {
	files, err := fs.Glob(FS, "*.json")
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no dashboards: %v", err)
	}
	var out []*dashboard
	for _, f := range files {
		b, err := fs.ReadFile(FS, f)
		if err != nil {
			return nil, err
		}
		d := &dashboard{file: f}
		if err := json.NewDecoder(bytes.NewReader(b)).Decode(d); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// allPanels flattens rows.
func (d *dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func (d *dashboard) variable(name string) (variable, bool) {
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v, true
		}
	}
	return variable{}, false
}

// query is one query of a dashboard with where it comes from, for messages.
type query struct {
	where string
	ds    dsRef
	sql   string // ClickHouse
	expr  string // PromQL

	timeseries bool // the ClickHouse plugin's time series format
}

// queries lists every panel, annotation and variable query of a dashboard, with the
// data source it runs on (a target's own, else its panel's).
func (d *dashboard) queries() []query {
	var out []query
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			ds := tg.Datasource
			if ds == nil {
				ds = p.Datasource
			}
			q := query{where: d.file + ": panel " + p.Title + " / " + tg.RefID, sql: tg.RawSQL, expr: tg.Expr, timeseries: tg.QueryType == "timeseries"}
			if ds != nil {
				q.ds = *ds
			}
			out = append(out, q)
		}
	}
	for _, a := range d.Annotations.List {
		if a.BuiltIn == 1 {
			continue
		}
		q := query{where: d.file + ": annotation " + a.Name, sql: a.Target.RawSQL, expr: a.Target.Expr}
		if a.Datasource != nil {
			q.ds = *a.Datasource
		}
		out = append(out, q)
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" || v.Datasource == nil {
			continue
		}
		q := query{where: d.file + ": variable " + v.Name, ds: *v.Datasource}
		if v.Datasource.Type == clickhouseType {
			q.sql = v.queryText()
		} else {
			q.expr = v.queryText()
		}
		out = append(out, q)
	}
	return out
}

// Query is one query of a shipped dashboard as Grafana sends it.
type Query struct {
	Dashboard  string // file name
	Where      string // the dashboard file and the panel, annotation or variable
	Datasource string // grafana-clickhouse-datasource or prometheus
	SQL        string // ClickHouse, expanded
	Expr       string // PromQL, expanded
}

// Queries returns every panel, annotation and variable query of every shipped dashboard,
// expanded as Grafana and the ClickHouse plugin expand it over [from, to] at interval
// with every variable on All: what the shipped dashboards ask Meridian for.
func Queries(from, to time.Time, interval time.Duration) ([]Query, error) {
	ds, err := load()
	if err != nil {
		return nil, err
	}
	all := grafanaQuery{from: from, to: to, interval: interval}
	var out []Query
	for _, d := range ds {
		known := map[string]bool{}
		for _, v := range d.Templating.List {
			known[v.Name] = v.Multi
		}
		for _, q := range d.queries() {
			e := Query{Dashboard: d.file, Where: q.where, Datasource: q.ds.Type}
			switch q.ds.Type {
			case clickhouseType:
				if e.SQL, err = expandSQL(q.sql, all, known); err != nil {
					return nil, fmt.Errorf("%s: %w", q.where, err)
				}
			case prometheusType:
				e.Expr = grafanaPromQL(q.expr)
			default:
				continue
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// This file expands a ClickHouse panel's SQL the way Grafana and the
// grafana-clickhouse-datasource plugin (v4) do before the query reaches ClickHouse:
//
//  1. the plugin's frontend applies $__conditionalAll(cond, $var): cond, or 1=1 when the
//     variable is All or empty (CHDatasource.applyConditionalAll, innermost-last);
//  2. Grafana's template service replaces $var, ${var}, ${var:fmt} and [[var]] (multi
//     values through the plugin's formatter as 'a','b') and the built-ins $__interval,
//     $__interval_ms, $__from, $__to;
//  3. the plugin's backend (sqlds, pkg/macros) expands $__timeFilter, $__timeInterval,
//     $__interval_s, $__fromTime, $__toTime and their _ms forms, $__dateFilter,
//     $__dateTimeFilter/$__dt; args are bracket-matched and comma-split as sqlutil does.

// grafanaQuery is what a panel query is expanded with.
type grafanaQuery struct {
	from, to time.Time
	interval time.Duration
	vars     map[string][]string // selected values; a variable set to All is absent or ["$__all"]
}

func (q grafanaQuery) isAll(name string) bool {
	v, ok := q.vars[name]
	return !ok || len(v) == 0 || (len(v) == 1 && (v[0] == "$__all" || v[0] == ""))
}

// expandSQL returns the SQL ClickHouse receives for raw. known maps the dashboard's
// variables to whether they are multi-value; an unknown $name or an unexpanded $__macro
// is an error.
func expandSQL(raw string, q grafanaQuery, known map[string]bool) (string, error) {
	s, err := conditionalAll(raw, q)
	if err != nil {
		return "", err
	}
	if s, err = templateReplace(s, q, known); err != nil {
		return "", err
	}
	if s, err = backendMacros(s, q); err != nil {
		return "", err
	}
	if i := strings.Index(s, "$__"); i >= 0 {
		return "", fmt.Errorf("unexpanded macro at %q", s[i:min(len(s), i+30)])
	}
	return s, nil
}

func conditionalAll(s string, q grafanaQuery) (string, error) {
	const macro = "$__conditionalAll("
	for i := strings.LastIndex(s, macro); i >= 0; i = strings.LastIndex(s, macro) {
		args, n := macroArgs(s[i+len(macro)-1:])
		if n < 0 || len(args) != 2 {
			return "", fmt.Errorf("$__conditionalAll needs 2 arguments: %q", s[i:])
		}
		name := strings.TrimSpace(args[1])
		name = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(name, "$"), "{"), "}")
		phrase := args[0]
		if q.isAll(name) {
			phrase = "1=1"
		}
		s = s[:i] + phrase + s[i+len(macro)-1+n:]
	}
	return s, nil
}

var templateVar = regexp.MustCompile(`\$(\w+)|\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]`)

func templateReplace(s string, q grafanaQuery, known map[string]bool) (string, error) {
	var err error
	out := templateVar.ReplaceAllStringFunc(s, func(m string) string {
		sub := templateVar.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[4]
		switch name {
		case "__interval":
			return promDuration(q.interval)
		case "__interval_ms":
			return strconv.FormatInt(q.interval.Milliseconds(), 10)
		case "__from":
			return strconv.FormatInt(q.from.UnixMilli(), 10)
		case "__to":
			return strconv.FormatInt(q.to.UnixMilli(), 10)
		}
		if strings.HasPrefix(name, "__") { // a plugin macro, expanded by the backend
			return m
		}
		multi, ok := known[name]
		if !ok {
			err = fmt.Errorf("unknown variable %s", m)
			return m
		}
		if q.isAll(name) {
			return "$__all" // Grafana sends the All value; a query must guard it with $__conditionalAll
		}
		vals := q.vars[name]
		if multi || sub[3] == "sqlstring" {
			// The plugin's format(): a multi-value variable's values become 'a','b'.
			quoted := make([]string, len(vals))
			for i, v := range vals {
				quoted[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
			}
			return strings.Join(quoted, ",")
		}
		return vals[0]
	})
	return out, err
}

// backendMacros mirrors pkg/macros of the plugin.
func backendMacros(s string, q grafanaQuery) (string, error) {
	seconds := int(math.Max(q.interval.Seconds(), 1))
	millis := int(math.Max(float64(q.interval.Milliseconds()), 1))
	dt := func(t time.Time) string { return fmt.Sprintf("toDateTime(%d)", t.Unix()) }
	dt64 := func(t time.Time) string { return fmt.Sprintf("fromUnixTimestamp64Milli(%d)", t.UnixMilli()) }
	date := func(t time.Time) string { return fmt.Sprintf("toDate('%s')", t.UTC().Format("2006-01-02")) }
	one := func(f func(string) string) func([]string) (string, error) {
		return func(a []string) (string, error) {
			if len(a) != 1 {
				return "", fmt.Errorf("expected 1 argument, received %d", len(a))
			}
			return f(a[0]), nil
		}
	}
	none := func(v string) func([]string) (string, error) { return func([]string) (string, error) { return v, nil } }
	dateTime := func(a []string) (string, error) {
		if len(a) != 2 {
			return "", fmt.Errorf("expected 2 arguments, received %d", len(a))
		}
		return fmt.Sprintf("(%s >= %s AND %s <= %s) AND (%s >= %s AND %s <= %s)",
			a[0], date(q.from), a[0], date(q.to), a[1], dt(q.from), a[1], dt(q.to)), nil
	}
	macros := map[string]func([]string) (string, error){
		"fromTime":    none(dt(q.from)),
		"toTime":      none(dt(q.to)),
		"fromTime_ms": none(dt64(q.from)),
		"toTime_ms":   none(dt64(q.to)),
		"timeFilter": one(func(c string) string {
			return fmt.Sprintf("%s >= %s AND %s <= %s", c, dt(q.from), c, dt(q.to))
		}),
		"timeFilter_ms": one(func(c string) string {
			return fmt.Sprintf("%s >= %s AND %s <= %s", c, dt64(q.from), c, dt64(q.to))
		}),
		"dateFilter": one(func(c string) string {
			return fmt.Sprintf("%s >= %s AND %s <= %s", c, date(q.from), c, date(q.to))
		}),
		"dateTimeFilter": dateTime,
		"dt":             dateTime,
		"timeInterval": one(func(c string) string {
			return fmt.Sprintf("toStartOfInterval(toDateTime(%s), INTERVAL %d second)", c, seconds)
		}),
		"timeInterval_ms": one(func(c string) string {
			return fmt.Sprintf("toStartOfInterval(toDateTime64(%s, 3), INTERVAL %d millisecond)", c, millis)
		}),
		"interval_s": none(strconv.Itoa(seconds)),
	}
	for name, f := range macros {
		re := regexp.MustCompile(`\$__` + name + `\b`)
		for {
			loc := re.FindStringIndex(s)
			if loc == nil {
				break
			}
			args, n := macroArgs(s[loc[1]:])
			if n < 0 {
				return "", fmt.Errorf("$__%s: missing close bracket", name)
			}
			for i := range args {
				args[i] = strings.TrimSpace(args[i])
			}
			v, err := f(args)
			if err != nil {
				return "", fmt.Errorf("$__%s: %w", name, err)
			}
			s = s[:loc[0]] + v + s[loc[1]+n:]
		}
	}
	return s, nil
}

// macroArgs reads a bracketed argument list at the start of s, splitting on top-level
// commas; n is its length, 0 without brackets, -1 when unbalanced.
func macroArgs(s string) (args []string, n int) {
	if !strings.HasPrefix(s, "(") {
		return nil, 0
	}
	depth, start := 0, 1
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return append(args, s[start:i]), i + 1
			}
		case ',':
			if depth == 1 {
				args = append(args, s[start:i])
				start = i + 1
			}
		}
	}
	return nil, -1
}

func promDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

var (
	labelValues  = regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`)
	grafanaVar   = regexp.MustCompile(`\$\{?(\w+)\}?`)
	grafanaRange = map[string]string{"__rate_interval": "1m", "__interval": "30s", "__range": "6h", "__range_s": "21600"}
)

// grafanaPromQL turns a dashboard expression into the PromQL Grafana sends: built-in
// intervals replaced, variables at their All value (.*), label_values(sel, label) reduced
// to its selector.
func grafanaPromQL(expr string) string {
	if m := labelValues.FindStringSubmatch(strings.TrimSpace(expr)); m != nil {
		expr = m[1]
	}
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := strings.Trim(v, "${}")
		if r, ok := grafanaRange[name]; ok {
			return r
		}
		return ".*"
	})
}
