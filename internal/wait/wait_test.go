package wait_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/wait"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	wait.Until(t, time.Minute, "the third poll", func() bool { return n.Add(1) == 3 })
	if got := n.Load(); got != 3 {
		t.Fatalf("polled %d times, want 3", got)
	}
}

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f)
}

func TestForFailsAtTheDeadlineWithTheLastError(t *testing.T) {
	f := &fakeT{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				panic(r)
			}
		}()
		wait.For(f, 20*time.Millisecond, "nothing", func() error { return errors.New("still down") })
	}()
	if !strings.Contains(f.failed, "waiting for nothing: still down") {
		t.Fatalf("at the deadline: %q, want what it waited for and the last error", f.failed)
	}
}
