package wireguard

import (
	"time"

	"github.com/meridianhq/meridian/pipeline"
)

// Thresholds decide a tunnel's status; see README.md "Status rule".
type Thresholds struct {
	// StaleAfter: a handshake older than this means the session has expired. WireGuard
	// rejects a session 180 s (REJECT_AFTER_TIME) after its handshake and re-keys at 120 s
	// while traffic flows, so a used tunnel never gets here.
	StaleAfter time.Duration `yaml:"stale_after"`
	// DownAfter: a handshake older than this means re-keying has failed for good (180 s +
	// REKEY_ATTEMPT_TIME 90 s = 270 s).
	DownAfter time.Duration `yaml:"down_after"`
	// SilentStale and SilentDown: data was sent to the peer but nothing came back and no
	// new handshake happened for this long. WireGuard itself gives up on a session after
	// 15 s of one-way traffic (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT) and starts a handshake,
	// which a live peer answers within seconds.
	SilentStale time.Duration `yaml:"silent_stale"`
	SilentDown  time.Duration `yaml:"silent_down"`
}

// DefaultThresholds follow WireGuard's protocol timers.
var DefaultThresholds = Thresholds{StaleAfter: 180 * time.Second, DownAfter: 270 * time.Second, SilentStale: 15 * time.Second, SilentDown: 60 * time.Second}

// keepaliveBytes is what one persistent keepalive adds to tx: an empty transport message.
const keepaliveBytes = 32

// peerState is what the collector remembers of one peer between samples.
type peerState struct {
	firstSeen     time.Time
	at            time.Time // previous sample
	rx, tx        uint64
	lastHandshake time.Time
	silentSince   time.Time // zero: the peer answered (rx grew or a handshake happened)
}

// observe folds a new sample into st (nil on first sight) and returns the new state and
// the rx/tx rates since the previous sample (0 on the first sample or a counter reset).
func observe(st *peerState, p *Peer, now time.Time) (next peerState, rxRate, txRate float64) {
	if st == nil {
		return peerState{firstSeen: now, at: now, rx: p.RxBytes, tx: p.TxBytes, lastHandshake: p.LastHandshake}, 0, 0
	}
	next = *st
	next.at, next.rx, next.tx, next.lastHandshake = now, p.RxBytes, p.TxBytes, p.LastHandshake
	dt := now.Sub(st.at)
	reset := p.RxBytes < st.rx || p.TxBytes < st.tx // the interface or its peer entry was re-created
	if dt > 0 && !reset {
		rxRate = float64(p.RxBytes-st.rx) / dt.Seconds()
		txRate = float64(p.TxBytes-st.tx) / dt.Seconds()
	}
	answered := reset || p.RxBytes > st.rx || p.LastHandshake.After(st.lastHandshake)
	var allowance uint64 // tx that persistent keepalives alone explain
	if p.Keepalive > 0 {
		allowance = keepaliveBytes * uint64(dt/p.Keepalive+1)
	}
	sentData := !reset && p.TxBytes-st.tx > allowance
	switch {
	case answered:
		next.silentSince = time.Time{}
	case sentData && st.silentSince.IsZero():
		next.silentSince = st.at // the data went out after the previous sample
	}
	return next, rxRate, txRate
}

// status applies the rule: the worse of the handshake-age verdict and the silence verdict.
func status(st *peerState, now time.Time, th Thresholds) string {
	if st.lastHandshake.IsZero() {
		if now.Sub(st.firstSeen) < th.StaleAfter {
			return pipeline.StatusUnknown // may still be coming up
		}
		return pipeline.StatusDown
	}
	s := pipeline.StatusOK
	switch age := now.Sub(st.lastHandshake); {
	case age >= th.DownAfter:
		return pipeline.StatusDown
	case age >= th.StaleAfter:
		s = pipeline.StatusDegraded
	}
	if !st.silentSince.IsZero() {
		switch silent := now.Sub(st.silentSince); {
		case silent >= th.SilentDown:
			return pipeline.StatusDown
		case silent >= th.SilentStale:
			s = pipeline.StatusDegraded
		}
	}
	return s
}
