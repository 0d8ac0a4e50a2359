package wireguard

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meridianhq/meridian/collectors/scrape"
)

// ParseDump parses `wg show all dump` output: tab-separated, an interface line (interface,
// private key, public key, listen port, fwmark) followed by its peer lines (interface,
// public key, preshared key, endpoint, allowed IPs, latest handshake in Unix seconds (0:
// never), rx bytes, tx bytes, persistent keepalive seconds or "off"). A bad line gives a
// scrape.LineError and is skipped; the other peers pass.
func ParseDump(source string, b []byte) ([]Peer, []error) {
	var (
		peers    []Peer
		errs     []error
		localKey = map[string]string{}
		fields   [9][]byte
	)
	for n := 1; len(b) > 0; n++ {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		nf := split(line, &fields)
		switch nf {
		case 5: // interface line
			key := string(fields[2])
			if _, err := wgtypes.ParseKey(key); err != nil {
				errs = append(errs, &scrape.LineError{Source: source, Line: n, Err: fmt.Errorf("interface %q public key: %w", fields[0], err)})
				continue
			}
			localKey[string(fields[0])] = key
		case 9:
			p, err := parsePeerLine(&fields)
			if err != nil {
				errs = append(errs, &scrape.LineError{Source: source, Line: n, Err: err})
				continue
			}
			p.LocalKey = localKey[p.Interface]
			peers = append(peers, p)
		default:
			errs = append(errs, &scrape.LineError{Source: source, Line: n, Err: fmt.Errorf("%d tab-separated fields, want 5 (interface) or 9 (peer)", nf)})
		}
	}
	return peers, errs
}

// split cuts line at tabs into fields and returns how many there were (more than
// len(fields) counts as len(fields)+1, which no caller accepts).
func split(line []byte, fields *[9][]byte) int {
	n := 0
	for {
		if n == len(fields) {
			return n + 1
		}
		i := bytes.IndexByte(line, '\t')
		if i < 0 {
			fields[n] = line
			return n + 1
		}
		fields[n], line = line[:i], line[i+1:]
		n++
	}
}

func parsePeerLine(f *[9][]byte) (Peer, error) {
	p := Peer{Interface: string(f[0]), PublicKey: string(f[1])}
	if p.Interface == "" {
		return p, fmt.Errorf("empty interface name")
	}
	if _, err := wgtypes.ParseKey(p.PublicKey); err != nil {
		return p, fmt.Errorf("peer public key %q: %w", p.PublicKey, err)
	}
	if ep := string(f[3]); ep != "(none)" {
		if _, err := netip.ParseAddrPort(ep); err != nil {
			return p, fmt.Errorf("peer %s endpoint: %w", p.PublicKey, err)
		}
		p.Endpoint = ep
	}
	if ips := f[4]; string(ips) != "(none)" && len(ips) > 0 {
		for s := range bytes.SplitSeq(ips, []byte{','}) {
			pfx, err := netip.ParsePrefix(string(s))
			if err != nil {
				return p, fmt.Errorf("peer %s allowed IPs: %w", p.PublicKey, err)
			}
			p.AllowedIPs = append(p.AllowedIPs, pfx)
		}
	}
	hs, err := strconv.ParseInt(string(f[5]), 10, 64)
	if err != nil || hs < 0 {
		return p, fmt.Errorf("peer %s latest handshake %q: not a Unix time", p.PublicKey, f[5])
	}
	if hs > 0 {
		p.LastHandshake = time.Unix(hs, 0)
	}
	if p.RxBytes, err = strconv.ParseUint(string(f[6]), 10, 64); err != nil {
		return p, fmt.Errorf("peer %s rx bytes: %w", p.PublicKey, err)
	}
	if p.TxBytes, err = strconv.ParseUint(string(f[7]), 10, 64); err != nil {
		return p, fmt.Errorf("peer %s tx bytes: %w", p.PublicKey, err)
	}
	if ka := string(f[8]); ka != "off" {
		s, err := strconv.ParseUint(ka, 10, 16)
		if err != nil {
			return p, fmt.Errorf("peer %s persistent keepalive %q: want seconds or off", p.PublicKey, ka)
		}
		p.Keepalive = time.Duration(s) * time.Second
	}
	return p, nil
}
