// Package wait is how tests synchronise with what runs in the background: they poll a
// condition until it holds or a deadline passes, never sleep a guessed time.
package wait

import (
	"errors"
	"testing"
	"time"
)

// maxPoll bounds the poll interval, which starts at a millisecond and doubles: a fast
// condition is seen at once, a slow one (a process, an API server) is not polled hard.
const maxPoll = 50 * time.Millisecond

// For polls cond until it returns nil; at the deadline it fails t, naming what it waited
// for and cond's last error.
func For(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for poll := time.Millisecond; ; poll = min(2*poll, maxPoll) {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", within, what, err)
		}
		time.Sleep(poll)
	}
}

// Until polls cond until it holds; at the deadline it fails t, naming what it waited for.
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	For(t, within, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("it does not hold yet")
