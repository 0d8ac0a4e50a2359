package dashboards

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

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

// The expansion matches the plugin's own examples (pkg/macros/macros_test.go, README).
func TestExpandSQL(t *testing.T) {
	q := grafanaQuery{
		from:     time.Unix(1617883200, 0).UTC(), // 2021-04-08 12:00:00
		to:       time.Unix(1617886800, 0).UTC(),
		interval: 20 * time.Second,
		vars:     map[string][]string{"site": {"nyc", "o'hare"}, "pop": {"$__all"}},
	}
	known := map[string]bool{"site": true, "pop": true, "one": false}
	q.vars["one"] = []string{"raw"}
	for _, c := range []struct{ in, want string }{
		{"$__timeFilter(time)", "time >= toDateTime(1617883200) AND time <= toDateTime(1617886800)"},
		{"$__timeFilter_ms(time)", "time >= fromUnixTimestamp64Milli(1617883200000) AND time <= fromUnixTimestamp64Milli(1617886800000)"},
		{"$__fromTime AND $__toTime", "toDateTime(1617883200) AND toDateTime(1617886800)"},
		{"$__dateFilter(d)", "d >= toDate('2021-04-08') AND d <= toDate('2021-04-08')"},
		{"$__timeInterval(time)", "toStartOfInterval(toDateTime(time), INTERVAL 20 second)"},
		{"$__timeInterval_ms(time)", "toStartOfInterval(toDateTime64(time, 3), INTERVAL 20000 millisecond)"},
		{"x / $__interval_s", "x / 20"},
		{"$__conditionalAll(site IN (${site}), $site)", "site IN ('nyc','o''hare')"},
		{"$__conditionalAll(pop IN (${pop}), $pop) AND $__conditionalAll(site IN ($site), $site)", "1=1 AND site IN ('nyc','o''hare')"},
		{"x = '$one' AND y = ${one:sqlstring}", "x = 'raw' AND y = 'raw'"},
		{"$__timeFilter(toDateTime(t, 'UTC'))", "toDateTime(t, 'UTC') >= toDateTime(1617883200) AND toDateTime(t, 'UTC') <= toDateTime(1617886800)"},
	} {
		got, err := expandSQL(c.in, q, known)
		if err != nil || got != c.want {
			t.Errorf("expand %q:\n got %q (%v)\nwant %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"$nosuch", "$__timeGroup(t, 1m)", "$__timeFilter(a, b)", "$__conditionalAll(x)"} {
		if got, err := expandSQL(bad, q, known); err == nil {
			t.Errorf("expand %q = %q, want an error", bad, got)
		}
	}
}
