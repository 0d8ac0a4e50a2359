// Package wireguard collects WireGuard tunnel state (handshakes, counters, status) from
// local devices (wgctrl), `wg show all dump` output and the two common exporters' /metrics,
// and emits one pipeline.TunnelStat per peer per interval, mapped to the inventory.
package wireguard

import (
	"net/netip"
	"time"
)

// Peer is one peer of one interface as a source reports it, before mapping and rates.
type Peer struct {
	Interface     string
	LocalKey      string // the interface's own public key, "" when the source does not say
	PublicKey     string
	Endpoint      string
	AllowedIPs    []netip.Prefix
	LastHandshake time.Time // zero: never
	RxBytes       uint64
	TxBytes       uint64
	Keepalive     time.Duration
}
