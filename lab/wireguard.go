package lab

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meridianhq/meridian/inventory"
)

// rekeyAfter is WireGuard's REKEY_AFTER_TIME: a live tunnel handshakes every 2 minutes.
const rekeyAfter = 120 * time.Second

// wgExporter serves, per node, the /metrics text of mdlayher/wireguard_exporter for a
// full mesh of wg0 peers. A failed tunnel stops handshaking and moving bytes.
type wgExporter struct {
	inv   *inventory.Inventory
	state *State
	mu    sync.Mutex
	peers map[string]*wgPeer // "local/remote"
}

type wgPeer struct {
	handshake time.Time
	rx, tx    float64
	last      time.Time
	rate      float64 // bytes/s each way while up
}

func newWGExporter(inv *inventory.Inventory, state *State) *wgExporter {
	return &wgExporter{inv: inv, state: state, peers: map[string]*wgPeer{}}
}

// ServeHTTP answers /wireguard/{node}/metrics.
func (e *wgExporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	var local *inventory.Node
	for i := range e.inv.Nodes {
		if e.inv.Nodes[i].Name == node {
			local = &e.inv.Nodes[i]
		}
	}
	if local == nil {
		http.Error(w, "unknown node "+node, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write(e.render(*local, time.Now()))
}

func (e *wgExporter) render(local inventory.Node, now time.Time) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	var info, hs, rx, tx, allowed strings.Builder
	for i, peer := range e.inv.Nodes {
		if peer.Name == local.Name {
			continue
		}
		p := e.peer(local, peer, now)
		down := local.Site != peer.Site && e.state.tunnelDown(local.Site, peer.Site)
		dt := now.Sub(p.last).Seconds()
		// Applications keep sending into a broken tunnel; nothing comes back and no
		// handshake completes. That silence is what the collector detects first.
		p.tx += p.rate * dt * 0.8
		if !down {
			p.rx += p.rate * dt
			if now.Sub(p.handshake) >= rekeyAfter {
				p.handshake = now
			}
		}
		p.last = now
		labels := fmt.Sprintf(`device="wg0",public_key="%s"`, peer.WireGuardKey)
		fmt.Fprintf(&info, "wireguard_peer_info{device=\"wg0\",endpoint=\"127.0.3.%d:51820\",name=\"%s\",public_key=\"%s\"} 1\n", i+1, peer.Name, peer.WireGuardKey)
		fmt.Fprintf(&allowed, "wireguard_peer_allowed_ips_info{allowed_ips=\"10.42.%d.0/24\",device=\"wg0\",family=\"IPv4\",public_key=\"%s\"} 1\n", i+1, peer.WireGuardKey)
		fmt.Fprintf(&hs, "wireguard_peer_last_handshake_seconds{%s} %d\n", labels, p.handshake.Unix())
		fmt.Fprintf(&rx, "wireguard_peer_receive_bytes_total{%s} %.0f\n", labels, p.rx)
		fmt.Fprintf(&tx, "wireguard_peer_transmit_bytes_total{%s} %.0f\n", labels, p.tx)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# HELP wireguard_device_info Metadata about a device.\n# TYPE wireguard_device_info gauge\nwireguard_device_info{device=\"wg0\",public_key=\"%s\"} 1\n", local.WireGuardKey)
	for _, s := range []struct{ name, typ, help, body string }{
		{"wireguard_peer_allowed_ips_info", "gauge", "Metadata about each of a peer's allowed IP subnets for a given device.", allowed.String()},
		{"wireguard_peer_info", "gauge", "Metadata about a peer. The public_key label on peer metrics refers to the peer's public key; not the device's public key.", info.String()},
		{"wireguard_peer_last_handshake_seconds", "gauge", "UNIX timestamp for the last handshake with a given peer.", hs.String()},
		{"wireguard_peer_receive_bytes_total", "counter", "Number of bytes received from a given peer.", rx.String()},
		{"wireguard_peer_transmit_bytes_total", "counter", "Number of bytes transmitted to a given peer.", tx.String()},
	} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s", s.name, s.help, s.name, s.typ, s.body)
	}
	return b.Bytes()
}

// peer returns the counters of local's view of remote, started with a stable phase so
// that tunnels do not all handshake in the same second.
func (e *wgExporter) peer(local, remote inventory.Node, now time.Time) *wgPeer {
	key := local.Name + "/" + remote.Name
	if p, ok := e.peers[key]; ok {
		return p
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	phase := time.Duration(h.Sum32()%uint32(rekeyAfter/time.Second)) * time.Second
	p := &wgPeer{handshake: now.Add(-phase), last: now, rate: float64(200_000 + h.Sum32()%2_000_000)}
	e.peers[key] = p
	return p
}
