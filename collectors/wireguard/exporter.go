package wireguard

import (
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meridianhq/meridian/collectors/scrape"
)

// ParseExporter parses the /metrics of mdlayher/wireguard_exporter or
// MindFlavor/prometheus_wireguard_exporter into peers. now resolves MindFlavor's
// handshake delay (seconds ago) into a time. Bad lines and series with a bad key are
// reported and skipped.
func ParseExporter(source string, b []byte, now time.Time) ([]Peer, []error) {
	type id struct{ iface, key string }
	peers := map[id]*Peer{}
	localKey := map[string]string{}
	var errs []error
	get := func(s scrape.Sample) *Peer {
		iface := s.Labels.Get("device") // mdlayher
		if iface == "" {
			iface = s.Labels.Get("interface") // MindFlavor
		}
		key := s.Labels.Get("public_key")
		if _, err := wgtypes.ParseKey(key); err != nil || iface == "" {
			errs = append(errs, fmt.Errorf("%s: series %s: want an interface and a valid public_key", source, s.Labels))
			return nil
		}
		p := peers[id{iface, key}]
		if p == nil {
			p = &Peer{Interface: iface, PublicKey: key}
			peers[id{iface, key}] = p
		}
		// MindFlavor puts all allowed IPs on every series: comma-separated in
		// allowed_ips, or split into allowed_ip_N/allowed_subnet_N (its -s flag).
		if p.AllowedIPs == nil && s.Name != "wireguard_peer_allowed_ips_info" {
			ips, err := mindflavorAllowedIPs(s.Labels)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: series %s: %w", source, s.Labels, err))
			}
			p.AllowedIPs = ips
		}
		return p
	}
	counter := func(v float64) uint64 {
		if v < 0 || math.IsNaN(v) || v > math.MaxUint64 {
			return 0
		}
		return uint64(v)
	}
	unix := func(v float64) time.Time {
		if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return time.Time{}
		}
		return time.Unix(int64(v), 0)
	}
	lerrs := scrape.Exposition(source, b, func(name []byte) bool {
		return strings.HasPrefix(string(name), "wireguard_")
	}, func(s scrape.Sample) {
		if s.Name == "wireguard_device_info" {
			localKey[s.Labels.Get("device")] = s.Labels.Get("public_key")
			return
		}
		switch s.Name {
		case "wireguard_peer_info", "wireguard_peer_allowed_ips_info",
			"wireguard_peer_last_handshake_seconds", "wireguard_latest_handshake_seconds",
			"wireguard_latest_handshake_delay_seconds",
			"wireguard_peer_receive_bytes_total", "wireguard_received_bytes_total",
			"wireguard_peer_transmit_bytes_total", "wireguard_sent_bytes_total":
		default:
			return
		}
		p := get(s)
		if p == nil {
			return
		}
		switch s.Name {
		case "wireguard_peer_info":
			p.Endpoint = s.Labels.Get("endpoint")
		case "wireguard_peer_allowed_ips_info":
			pfx, err := netip.ParsePrefix(s.Labels.Get("allowed_ips"))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: series %s: allowed_ips: %w", source, s.Labels, err))
				return
			}
			p.AllowedIPs = append(p.AllowedIPs, pfx)
		case "wireguard_peer_last_handshake_seconds", "wireguard_latest_handshake_seconds":
			// Both are Unix times despite MindFlavor's name.
			p.LastHandshake = unix(s.Value)
		case "wireguard_latest_handshake_delay_seconds":
			if s.Value >= 0 && s.Value < float64(now.Unix()) {
				p.LastHandshake = now.Add(-time.Duration(s.Value * float64(time.Second))).Truncate(time.Second)
			}
		case "wireguard_peer_receive_bytes_total", "wireguard_received_bytes_total":
			p.RxBytes = counter(s.Value)
		case "wireguard_peer_transmit_bytes_total", "wireguard_sent_bytes_total":
			p.TxBytes = counter(s.Value)
		}
	})
	out := make([]Peer, 0, len(peers))
	for _, p := range peers {
		p.LocalKey = localKey[p.Interface]
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Interface != out[j].Interface {
			return out[i].Interface < out[j].Interface
		}
		return out[i].PublicKey < out[j].PublicKey
	})
	return out, append(lerrs, errs...)
}

// mindflavorAllowedIPs reads a MindFlavor series' allowed IPs from either label form.
// A bad entry is reported and the good ones next to it are kept.
func mindflavorAllowedIPs(lbls labels.Labels) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var bad []string
	if ips := lbls.Get("allowed_ips"); ips != "" {
		for ip := range strings.SplitSeq(ips, ",") {
			if ip = strings.TrimSpace(ip); ip == "" || ip == "(none)" {
				continue
			}
			pfx, err := netip.ParsePrefix(ip)
			if err != nil {
				bad = append(bad, "allowed_ips "+strconv.Quote(ip))
				continue
			}
			out = append(out, pfx)
		}
	}
	for i := 0; ; i++ {
		ipLabel, subnetLabel := "allowed_ip_"+strconv.Itoa(i), "allowed_subnet_"+strconv.Itoa(i)
		ip, subnet := lbls.Get(ipLabel), lbls.Get(subnetLabel)
		if ip == "" && subnet == "" {
			break
		}
		pfx, err := netip.ParsePrefix(ip + "/" + subnet)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s=%q %s=%q", ipLabel, ip, subnetLabel, subnet))
			continue
		}
		out = append(out, pfx)
	}
	if bad != nil {
		return out, fmt.Errorf("bad allowed IPs: %s", strings.Join(bad, ", "))
	}
	return out, nil
}
