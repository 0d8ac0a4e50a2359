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

// wgNetns is the lab's WireGuard mesh for real (-lab.wireguard-netns): one network
// namespace per site, a veth pair between every two sites, and in each site's namespace
// one wireguard-go device per node of that site, holding that node's real key (written
// into the inventory). Every device has every other node as a peer with a persistent
// keepalive: a full mesh. Nodes of one site reach each other over their namespace's
// loopback, nodes of two sites over the veth pair between the sites, so failing tunnel
// A-B sets that pair's two ends down and breaks every tunnel between nodes of A and B.
type wgNetns struct {
	net     *netns.Net
	ns      map[string]string     // site -> namespace
	links   map[string][2]vethEnd // SitePair -> the pair's two ends
	devices []string
}

type vethEnd struct{ ns, dev string }

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
			ea, eb := vethEnd{m.ns[a], "to-" + b}, vethEnd{m.ns[b], "to-" + a}
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
	return nil
}

// setTunnel sets both veth ends between two sites up or down.
func (m *wgNetns) setTunnel(pair string, up bool) error {
	for _, e := range m.links[pair] {
		if err := m.net.SetLink(e.ns, e.dev, up); err != nil {
			return err
		}
	}
	return nil
}

// close kills the wireguard-go processes and deletes the namespaces with their veths.
func (m *wgNetns) close() error { return m.net.Close() }
