package dashboards

import (
	"testing"
	"time"
)

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
