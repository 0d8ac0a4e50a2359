package keepalived

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

func TestParseLine(t *testing.T) {
	for _, c := range []struct {
		line string
		want Event
		err  string // "" ok, "ignored", or a substring of the error
	}{
		{`INSTANCE "VI_1" MASTER 150`, Event{"VI_1", "MASTER", 150}, ""},
		{`INSTANCE "VI with space" BACKUP 100` + "\n", Event{"VI with space", "BACKUP", 100}, ""},
		{`INSTANCE "VI_1" STOP 0`, Event{"VI_1", "STOP", 0}, ""},
		{`GROUP "G1" MASTER`, Event{}, "ignored"},
		{`INSTANCE "VI_1" MASTR 150`, Event{}, `unknown state "MASTR"`},
		{`INSTANCE "VI_1" MASTER 256`, Event{}, "not 0-255"},
		{`INSTANCE VI_1 MASTER 150`, Event{}, "not quoted"},
		{`hello`, Event{}, `unknown line type "hello"`},
	} {
		got, err := ParseLine(c.line)
		switch {
		case c.err == "ignored" && !errors.Is(err, errIgnored):
			t.Errorf("%q: err %v, want ignored", c.line, err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("%q: %+v, %v; want %+v", c.line, got, err, c.want)
		case c.err != "" && c.err != "ignored" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: err %v, want one containing %q", c.line, err, c.err)
		}
	}
}

// A master that stops hands over to the backup: the backup's transition to MASTER is a
// failover naming the old master and the time without one. A daemon that vanishes (its
// FIFO closed) ends its mastership the same way. A priority change alone is no transition.
func TestTrackerFailover(t *testing.T) {
	tr := NewTracker()
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	apply := func(ms int, node, state string, prio uint32) *pipeline.VRRPTransition {
		return tr.Apply(at(ms), "lon", node, Event{"VI_1", state, prio})
	}
	apply(0, "a", "BACKUP", 150)
	apply(0, "b", "BACKUP", 100)
	if got := apply(3000, "a", "MASTER", 150); got.Failover || got.From != "BACKUP" {
		t.Errorf("first master: %+v, want no failover", got)
	}
	if apply(3100, "a", "MASTER", 140) != nil {
		t.Error("a priority change made a transition")
	}
	apply(5000, "a", "STOP", 140)
	got := apply(5600, "b", "MASTER", 100)
	if !got.Failover || got.PreviousMaster != "a" || got.Duration != 600*time.Millisecond || !got.M.Time.Equal(at(5600)) {
		t.Errorf("takeover: %+v, want a failover from a after 600ms", got)
	}
	if n := tr.Masters("lon", "VI_1"); n != 1 {
		t.Errorf("masters %d, want 1", n)
	}
	gone := tr.Gone(at(9000), "lon", "b")
	if len(gone) != 1 || gone[0].To != pipeline.VRRPUnknown {
		t.Fatalf("gone: %+v", gone)
	}
	if got := apply(9800, "a", "MASTER", 150); !got.Failover || got.PreviousMaster != "b" || got.Duration != 800*time.Millisecond {
		t.Errorf("after b vanished: %+v, want a failover from b after 800ms", got)
	}
	// Split brain: b comes back MASTER without hearing a.
	apply(10000, "b", "MASTER", 100)
	if n := tr.Masters("lon", "VI_1"); n != 2 {
		t.Errorf("masters %d, want 2", n)
	}
	states := tr.States(at(10000), func(string) []string { return []string{"192.0.2.10"} })
	for _, s := range states {
		if !s.HoldsVIP || s.VIPs[0] != "192.0.2.10" {
			t.Errorf("state %+v, want both holding the VIP", s)
		}
	}
}

// Any line parses without a panic; what parses applies to a tracker.
func FuzzParseLine(f *testing.F) {
	for _, l := range []string{`INSTANCE "VI_1" MASTER 150`, `GROUP "G" BACKUP`, `INSTANCE "" FAULT 1`, `INSTANCE "x`} {
		f.Add(l)
	}
	tr := NewTracker()
	f.Fuzz(func(t *testing.T, line string) {
		if e, err := ParseLine(line); err == nil {
			tr.Apply(time.Now(), "p", "n", e)
		}
	})
}
