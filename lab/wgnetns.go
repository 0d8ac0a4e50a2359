package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meridianhq/meridian/internal/netns"
	"github.com/meridianhq/meridian/inventory"
)

// wgKeepalive is the mesh's persistent keepalive: short, so that a broken tunnel's
// counters visibly stop within seconds.
const wgKeepalive = 5 * time.Second

// wgTrafficEvery is how often each node sends a datagram to every node of another site
// through their tunnel, as applications would: the collector tells a broken tunnel by data
// sent and nothing back, which keepalives alone do not show.
const wgTrafficEvery = time.Second

// deadMAC is a link-layer address no interface has: a neighbour entry pointing at it
// makes frames leave and the other end discard them.
const deadMAC = "02:00:5e:00:00:01"

// overlayAddr is node i's address inside the mesh (on its device, in its allowed IPs).
func overlayAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 42, byte(i + 1), 1}) }

// wgNetns is the lab's WireGuard mesh for real (-lab.wireguard-netns): one network
// namespace per site, a veth pair between every two sites, and in each site's namespace
// one wireguard-go device per node of that site, holding that node's real key (written
// into the inventory). Every device has every other node as a peer with a persistent
// keepalive: a full mesh. Nodes of one site reach each other over their namespace's
// loopback, nodes of two sites over the veth pair between the sites. Each node sends a
// little traffic to the nodes of other sites; failing tunnel A-B makes the A-B veths
// drop every frame, so every tunnel between nodes of A and B sends and hears nothing.
type wgNetns struct {
	net     *netns.Net
	ns      map[string]string     // site -> namespace
	links   map[string][2]vethEnd // SitePair -> the pair's two ends
	devices []string
	conns   []*net.UDPConn // per node, bound to its overlay address inside its namespace
}

type vethEnd struct {
	ns, dev string
	addr    netip.Addr
}

// startWGNetns builds the mesh for inv's nodes and sets their WireGuardKey to the real
// public keys. On error everything made so far is removed.
func startWGNetns(ctx context.Context, inv *inventory.Inventory) (*wgNetns, error) {
	reason, err := netns.Unavailable()
	if err == nil && reason != "" {
		err = fmt.Errorf("%s", reason)
	}
	if err != nil {
		return nil, fmt.Errorf("lab: -lab.wireguard-netns: %w", err)
	}
	n, err := netns.New()
	if err != nil {
		return nil, err
	}
	m := &wgNetns{net: n, ns: map[string]string{}, links: map[string][2]vethEnd{}}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.build(ctx, inv); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("lab: WireGuard namespaces: %w", err)
	}
	return m, nil
}

func (m *wgNetns) build(ctx context.Context, inv *inventory.Inventory) error {
	sites := siteNames(inv)
	for _, s := range sites {
		ns, err := m.net.AddNamespace(s)
		if err != nil {
			return err
		}
		m.ns[s] = ns
	}
	// Underlay: site pair k is 10.201.k.0/24, .1 on the first site (in name order), .2 on
	// the second; the veth inside a site's namespace is named after the other site.
	addr := map[[2]string]netip.Addr{} // (site, other site) -> site's address towards it
	k := 0
	for i, a := range sites {
		for _, b := range sites[i+1:] {
			pa := netip.AddrFrom4([4]byte{10, 201, byte(k), 1})
			pb := netip.AddrFrom4([4]byte{10, 201, byte(k), 2})
			ea, eb := vethEnd{m.ns[a], "to-" + b, pa}, vethEnd{m.ns[b], "to-" + a, pb}
			if err := m.net.Link(ea.ns, ea.dev, netip.PrefixFrom(pa, 24), eb.ns, eb.dev, netip.PrefixFrom(pb, 24)); err != nil {
				return err
			}
			m.links[SitePair(a, b)] = [2]vethEnd{ea, eb}
			addr[[2]string{a, b}], addr[[2]string{b, a}] = pa, pb
			k++
		}
	}
	// Devices first, peers second: a handshake sent before its peer listens is retried
	// only after 5 s.
	keys := make([]wgtypes.Key, len(inv.Nodes))
	port := func(i int) int { return 51820 + i }
	for i := range inv.Nodes {
		key, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return err
		}
		keys[i] = key
		inv.Nodes[i].WireGuardKey = key.PublicKey().String()
		dev := m.net.DeviceName(strconv.Itoa(i))
		p := port(i)
		if err := m.net.WireGuard(ctx, m.ns[inv.Nodes[i].Site], dev, wgtypes.Config{PrivateKey: &key, ListenPort: &p}); err != nil {
			return err
		}
		m.devices = append(m.devices, dev)
	}
	keepalive := wgKeepalive
	for i, local := range inv.Nodes {
		var peers []wgtypes.PeerConfig
		for j, remote := range inv.Nodes {
			if i == j {
				continue
			}
			ip := netip.AddrFrom4([4]byte{127, 0, 0, 1}) // the namespace's own loopback
			if remote.Site != local.Site {
				ip = addr[[2]string{remote.Site, local.Site}]
			}
			peers = append(peers, wgtypes.PeerConfig{
				PublicKey:                   keys[j].PublicKey(),
				Endpoint:                    net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port(j)))),
				AllowedIPs:                  []net.IPNet{{IP: net.IPv4(10, 42, byte(j+1), 0), Mask: net.CIDRMask(24, 32)}},
				PersistentKeepaliveInterval: &keepalive,
			})
		}
		if err := netns.ConfigureDevice(m.devices[i], wgtypes.Config{ReplacePeers: true, Peers: peers}); err != nil {
			return fmt.Errorf("configuring %s: %w", m.devices[i], err)
		}
	}
	// Overlay: several devices share a site's namespace, so what a node sends from its
	// own address is routed through its own device (a routing table per node).
	for i, n := range inv.Nodes {
		ns, a, table := m.ns[n.Site], overlayAddr(i).String(), strconv.Itoa(100+i)
		for _, args := range [][]string{
			{"addr", "add", a + "/32", "dev", m.devices[i]},
			{"rule", "add", "from", a, "table", table},
			{"route", "add", "10.42.0.0/16", "dev", m.devices[i], "table", table},
		} {
			if err := netns.IP(ns, args...); err != nil {
				return err
			}
		}
		c, err := m.net.ListenUDP(ns, netip.AddrPortFrom(overlayAddr(i), 0))
		if err != nil {
			return err
		}
		m.conns = append(m.conns, c)
	}
	return nil
}

// traffic sends, until ctx ends, a datagram every wgTrafficEvery from each node to the
// discard port of every node of another site; the peer's kernel answers with an ICMP
// port unreachable, so a live tunnel moves bytes both ways. (Nodes of one site would
// reach each other's overlay address locally, not through their tunnel.)
func (m *wgNetns) traffic(ctx context.Context, inv *inventory.Inventory) {
	payload := make([]byte, 64)
	t := time.NewTicker(wgTrafficEvery)
	defer t.Stop()
	for {
		for i, a := range inv.Nodes {
			for j, b := range inv.Nodes {
				if a.Site != b.Site {
					_, _ = m.conns[i].WriteToUDPAddrPort(payload, netip.AddrPortFrom(overlayAddr(j), 9))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// setTunnel breaks or mends the path between two sites. Broken, each end's neighbour
// entry for the other points at deadMAC: WireGuard's sends still succeed and the other end
// discards the frames, as across a broken path. Mended, the entries go and ARP resolves
// the real addresses again.
func (m *wgNetns) setTunnel(pair string, up bool) error {
	ends := m.links[pair]
	for k, e := range ends {
		other := ends[1-k].addr.String()
		args := []string{"neigh", "replace", other, "lladdr", deadMAC, "nud", "permanent", "dev", e.dev}
		if up {
			args = []string{"neigh", "del", other, "dev", e.dev}
		}
		if err := netns.IP(e.ns, args...); err != nil {
			return err
		}
	}
	return nil
}

// close kills the wireguard-go processes and deletes the namespaces with their veths.
func (m *wgNetns) close() error {
	for _, c := range m.conns {
		c.Close()
	}
	return m.net.Close()
}
