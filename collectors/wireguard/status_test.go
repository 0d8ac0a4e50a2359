package wireguard

import (
	"testing"
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// TestStatusRule walks one peer through samples on an injected clock.
func TestStatusRule(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	th := DefaultThresholds
	type sample struct {
		at        time.Duration // since t0
		handshake time.Duration // since t0; -1: never
		rx, tx    uint64
		keepalive time.Duration
		want      string
		rxRate    float64
	}
	cases := map[string][]sample{
		"never handshaked: unknown, then down": {
			{0, -1, 0, 0, 0, pipeline.StatusUnknown, 0},
			{th.StaleAfter, -1, 0, 0, 0, pipeline.StatusDown, 0},
		},
		"handshake age: ok, stale, down": {
			{10 * time.Second, 0, 100, 100, 0, pipeline.StatusOK, 0},
			{th.StaleAfter, 0, 100, 100, 0, pipeline.StatusDegraded, 0},
			{th.DownAfter, 0, 100, 100, 0, pipeline.StatusDown, 0},
		},
		"fresh handshake restores ok": {
			{0, 0, 0, 0, 0, pipeline.StatusOK, 0},
			{200 * time.Second, 0, 0, 0, 0, pipeline.StatusDegraded, 0},
			{210 * time.Second, 205 * time.Second, 1000, 0, 0, pipeline.StatusOK, 100},
		},
		"data sent, nothing back: stale then down before the handshake ages": {
			{0, 0, 1000, 1000, 0, pipeline.StatusOK, 0},
			{10 * time.Second, 0, 1000, 5000, 0, pipeline.StatusOK, 0},
			{14 * time.Second, 0, 1000, 9000, 0, pipeline.StatusOK, 0},
			{25 * time.Second, 0, 1000, 9500, 0, pipeline.StatusDegraded, 0},
			{70 * time.Second, 0, 1000, 20000, 0, pipeline.StatusDown, 0},
			{75 * time.Second, 0, 1100, 20100, 0, pipeline.StatusOK, 20},
		},
		"keepalives alone are not one-way data": {
			{0, 0, 1000, 1000, 5 * time.Second, pipeline.StatusOK, 0},
			{20 * time.Second, 0, 1000, 1000 + 4*keepaliveBytes, 5 * time.Second, pipeline.StatusOK, 0},
			{40 * time.Second, 0, 1000, 1000 + 8*keepaliveBytes, 5 * time.Second, pipeline.StatusOK, 0},
		},
		"counter reset (restart) gives rate 0, not negative": {
			{0, 0, 5000, 5000, 0, pipeline.StatusOK, 0},
			{10 * time.Second, 8 * time.Second, 10, 10, 0, pipeline.StatusOK, 0},
			{20 * time.Second, 8 * time.Second, 1010, 10, 0, pipeline.StatusOK, 100},
		},
	}
	for name, samples := range cases {
		t.Run(name, func(t *testing.T) {
			var st *peerState
			for i, s := range samples {
				p := Peer{RxBytes: s.rx, TxBytes: s.tx, Keepalive: s.keepalive}
				if s.handshake >= 0 {
					p.LastHandshake = t0.Add(s.handshake)
				}
				now := t0.Add(s.at)
				next, rx, _ := observe(st, &p, now)
				st = &next
				if got := status(st, now, th); got != s.want || rx != s.rxRate {
					t.Fatalf("sample %d: status %s rx rate %v, want %s %v", i, got, rx, s.want, s.rxRate)
				}
			}
		})
	}
}
