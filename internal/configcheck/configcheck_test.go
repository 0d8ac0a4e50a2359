package configcheck_test

import (
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/configcheck"
)

func TestChecksNameTheFieldAndValue(t *testing.T) {
	// What each failed check says, keyed by the wanted text.
	failed := map[string]error{
		"a.interval: must be positive, got 0s":            configcheck.Positive("a.interval", time.Duration(0)),
		"a.size: must be positive, got -1":                configcheck.Positive("a.size", -1),
		"a.grace: must not be negative, got -1s":          configcheck.NotNegative("a.grace", -time.Second),
		"a.retention: must be at least 1h0m0s, got 30m0s": configcheck.AtLeast("a.retention", 30*time.Minute, time.Hour),
		"a.path: must be set":                             configcheck.Set("a.path", ""),
		"a.first: must be positive, got 0":                configcheck.First(nil, configcheck.Positive("a.first", 0), configcheck.Positive("a.second", 0)),
	}
	for want, err := range failed {
		if err == nil || err.Error() != want {
			t.Errorf("got %v, want %q", err, want)
		}
	}
	for _, err := range []error{
		configcheck.Positive("a", 0.5), configcheck.NotNegative("a", 0), configcheck.AtLeast("a", 2, 2),
		configcheck.Set("a", "x"), configcheck.First(nil, nil),
	} {
		if err != nil {
			t.Errorf("a valid value failed: %v", err)
		}
	}
}
