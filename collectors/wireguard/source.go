package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meridianhq/meridian/collectors/scrape"
)

// source is one place peers come from. read returns the peers it could read and the
// bad lines it skipped; err means the whole source failed this time.
type source struct {
	name string
	read func(ctx context.Context, now time.Time) (peers []Peer, bad []error, err error)
}

func (c *Collector) sources() []source {
	var s []source
	if c.cfg.Devices {
		s = append(s, source{name: "wgctrl", read: c.readDevices})
	}
	if cmd := strings.Fields(c.cfg.DumpCommand); len(cmd) > 0 {
		name := "exec:" + strings.Join(cmd, " ")
		s = append(s, source{name: name, read: func(ctx context.Context, _ time.Time) ([]Peer, []error, error) {
			out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).Output()
			if err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
				}
				return nil, nil, err
			}
			p, bad := ParseDump(name, out)
			return p, bad, nil
		}})
	}
	for _, f := range c.cfg.DumpFiles {
		name := "file:" + f
		s = append(s, source{name: name, read: func(context.Context, time.Time) ([]Peer, []error, error) {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, nil, err
			}
			p, bad := ParseDump(name, b)
			return p, bad, nil
		}})
	}
	for _, u := range c.cfg.ExporterURLs {
		if c.owner != nil && !c.owner.Owns(u) {
			continue // another collector replica scrapes it
		}
		s = append(s, source{name: u, read: func(ctx context.Context, now time.Time) ([]Peer, []error, error) {
			b, err := scrape.Fetch(ctx, c.http, u)
			if err != nil {
				return nil, nil, err
			}
			p, bad := ParseExporter(u, b, now)
			return p, bad, nil
		}})
	}
	return s
}

// readDevices lists local devices through wgctrl: kernel devices over netlink and
// userspace ones (wireguard-go) over their UAPI sockets in /var/run/wireguard.
func (c *Collector) readDevices(context.Context, time.Time) ([]Peer, []error, error) {
	if c.wg == nil {
		wg, err := wgctrl.New()
		if err != nil {
			return nil, nil, err
		}
		c.wg = wg
	}
	devs, err := c.wg.Devices()
	if err != nil {
		return nil, nil, err
	}
	var peers []Peer
	for _, d := range devs {
		for _, p := range d.Peers {
			peers = append(peers, fromWgtypes(d, &p))
		}
	}
	return peers, nil, nil
}

func fromWgtypes(d *wgtypes.Device, p *wgtypes.Peer) Peer {
	out := Peer{
		Interface:     d.Name,
		LocalKey:      d.PublicKey.String(),
		PublicKey:     p.PublicKey.String(),
		LastHandshake: p.LastHandshakeTime,
		RxBytes:       uint64(max(p.ReceiveBytes, 0)),
		TxBytes:       uint64(max(p.TransmitBytes, 0)),
		Keepalive:     p.PersistentKeepaliveInterval,
	}
	if out.LastHandshake.Unix() <= 0 {
		out.LastHandshake = time.Time{} // wgctrl reports "never" as the Unix epoch
	}
	if p.Endpoint != nil {
		out.Endpoint = p.Endpoint.String()
	}
	for _, n := range p.AllowedIPs {
		if a, ok := netip.AddrFromSlice(n.IP); ok {
			ones, _ := n.Mask.Size()
			out.AllowedIPs = append(out.AllowedIPs, netip.PrefixFrom(a.Unmap(), ones))
		}
	}
	return out
}
