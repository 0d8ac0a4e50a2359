// Package testtime gives tests and benchmarks timestamps that stay inside every table's
// TTL on whatever date they run: stored rows must never be dated near a retention edge.
package testtime

import (
	"fmt"
	"time"
)

// Day is yesterday, 00:00 UTC, fixed at process start. Rows at Day plus a few hours are
// days inside the shortest TTL (flows, 7 days) and never in the future.
var Day = time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)

// SQL is t as a ClickHouse DateTime64 literal of the given precision, in UTC.
func SQL(t time.Time, precision int) string {
	return fmt.Sprintf("toDateTime64('%s', %d, 'UTC')", t.UTC().Format("2006-01-02 15:04:05.999999999"), precision)
}
