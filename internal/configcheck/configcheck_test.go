package configcheck_test

import (
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/configcheck"
)

func TestChecksNameTheFieldAndValue(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{configcheck.Positive("a.interval", time.Duration(0)), "a.interval: must be positive, got 0s"},
		{configcheck.Positive("a.size", -1), "a.size: must be positive, got -1"},
		{configcheck.NotNegative("a.grace", -time.Second), "a.grace: must not be negative, got -1s"},
		{configcheck.AtLeast("a.retention", 30*time.Minute, time.Hour), "a.retention: must be at least 1h0m0s, got 30m0s"},
		{configcheck.Set("a.path", ""), "a.path: must be set"},
		{configcheck.First(nil, configcheck.Positive("a.first", 0), configcheck.Positive("a.second", 0)), "a.first: must be positive, got 0"},
	} {
		if tc.err == nil || tc.err.Error() != tc.want {
			t.Errorf("got %v, want %q", tc.err, tc.want)
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
