package wireguard

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/collectors/scrape"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/wireguard/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseDumpRealSample(t *testing.T) {
	peers, errs := ParseDump("issue19", readTestdata(t, "mindflavor-wg-show-all-dump-issue19.txt"))
	if len(errs) != 0 {
		t.Fatalf("errors on a valid dump: %v", errs)
	}
	if len(peers) != 17 {
		t.Fatalf("%d peers, want 17", len(peers))
	}
	p := peers[len(peers)-1]
	if p.Interface != "wg0" || p.PublicKey != "sUsR6xufQQ8Tf0FuyY9tfEeYdhVMeFelr4ZMUrj+B0E=" ||
		p.LastHandshake.Unix() != 1574770693 || p.RxBytes != 75066288152 || p.TxBytes != 1624251784 ||
		p.Endpoint != "10.211.123.128:51820" || len(p.AllowedIPs) != 1 || p.AllowedIPs[0].String() != "10.90.0.18/32" ||
		p.LocalKey != "VfjHGauX8OxotDMm2vi3JdwOUTDsFbxCnyInJ/wAXlk=" || p.Keepalive != 0 {
		t.Fatalf("last peer parsed as %+v", p)
	}
	if !peers[0].LastHandshake.IsZero() {
		t.Fatalf("handshake 0 must mean never, got %v", peers[0].LastHandshake)
	}
}

func TestParseDumpBadLinesKeepGoodPeers(t *testing.T) {
	good := "wg1\tyAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\t(none)\t[fd00::2]:51820\t10.0.0.2/32,fd00::/64\t1700000000\t10\t20\t25\n"
	in := "wg1\tprivate\tHIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\t51820\toff\n" +
		good +
		"wg1\tnot-a-key\t(none)\t(none)\t(none)\t0\t0\t0\toff\n" + // line 3
		"wg1\tyAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\t(none)\t(none)\t(none)\tx\t0\t0\toff\n" + // line 4
		"truncated\tline\n" + // line 5
		strings.Replace(good, "yAnz", "xAnz", 1)
	peers, errs := ParseDump("host-a", []byte(in))
	if len(peers) != 2 || peers[0].Keepalive != 25*time.Second || peers[0].Endpoint != "[fd00::2]:51820" || len(peers[0].AllowedIPs) != 2 {
		t.Fatalf("peers %+v", peers)
	}
	var lines []int
	for _, e := range errs {
		var le *scrape.LineError
		if !errors.As(e, &le) || le.Source != "host-a" {
			t.Fatalf("%v: not a LineError naming the source", e)
		}
		lines = append(lines, le.Line)
	}
	if len(lines) != 3 || lines[0] != 3 || lines[1] != 4 || lines[2] != 5 {
		t.Fatalf("bad lines %v, want [3 4 5]: %v", lines, errs)
	}
}

func TestParseExporters(t *testing.T) {
	now := time.Unix(1600000000, 0)
	md, errs := ParseExporter("mdlayher", readTestdata(t, "mdlayher-readme-metrics.prom"), now)
	if len(errs) != 0 || len(md) != 2 {
		t.Fatalf("mdlayher: %d peers, errors %v", len(md), errs)
	}
	bar := md[0] // sorted by key: "UvwW..." < "VWRs..."
	if bar.PublicKey != "UvwWyMQ1ckLEG82Qdooyr0UzJhqOlzzcx90DXuwMTDA=" || bar.RxBytes != 76728 || bar.TxBytes != 76200 ||
		bar.LastHandshake.Unix() != 1588274629 || len(bar.AllowedIPs) != 2 || bar.Endpoint != "[fd9e:1a04:f01d:20:e5c2:7b69:90d8:ca45]:49203" ||
		bar.LocalKey != "QwAmAD1v4wMIX/0gKJbr9hv1o3YX0YTk7Mdj0L4dylI=" {
		t.Fatalf("mdlayher peer %+v", bar)
	}
	if !md[1].LastHandshake.IsZero() {
		t.Fatalf("handshake 0 must mean never: %+v", md[1])
	}
	for _, f := range []string{"mindflavor-readme-metrics-allowed_ips.prom", "mindflavor-readme-metrics-friendly_name.prom"} {
		mf, errs := ParseExporter(f, readTestdata(t, f), now)
		if len(errs) != 0 || len(mf) != 7 {
			t.Fatalf("%s: %d peers, errors %v", f, len(mf), errs)
		}
		var found bool
		for _, p := range mf {
			if p.PublicKey == "2S7mA0vEMethCNQrJpJKE81/JmhgtB+tHHLYQhgM6kk=" {
				found = p.TxBytes == 3208804 && p.RxBytes == 71420072 && p.LastHandshake.Unix() == 1562834127 && len(p.AllowedIPs) == 2
			}
		}
		if !found {
			t.Fatalf("%s: OnePlus 6T peer missing or wrong: %+v", f, mf)
		}
	}
}

// MindFlavor's exporter with -s splits a peer's allowed IPs into allowed_ip_N and
// allowed_subnet_N labels; its own test renders issue 19's dump that way. Every peer
// must come out equal to the same dump read directly.
func TestParseExporterSeparateAllowedIPs(t *testing.T) {
	split, errs := ParseExporter("split", readTestdata(t, "mindflavor-test-issue19-separate-allowed-ips.prom"), time.Now())
	if len(errs) != 0 {
		t.Fatalf("errors on a valid exposition: %v", errs)
	}
	dump, _ := ParseDump("dump", readTestdata(t, "mindflavor-wg-show-all-dump-issue19.txt"))
	if len(split) != len(dump) || len(split) != 17 {
		t.Fatalf("%d peers from the exporter, %d from the dump, want 17", len(split), len(dump))
	}
	byKey := map[string]Peer{}
	for _, d := range dump {
		byKey[d.PublicKey] = d
	}
	for i, p := range split {
		d := byKey[p.PublicKey]
		if fmt.Sprint(p.AllowedIPs) != fmt.Sprint(d.AllowedIPs) ||
			p.RxBytes != d.RxBytes || p.TxBytes != d.TxBytes || !p.LastHandshake.Equal(d.LastHandshake) {
			t.Errorf("peer %d: exporter %+v, dump %+v", i, p, d)
		}
	}
	if got := fmt.Sprint(split[0].AllowedIPs); split[0].PublicKey != "+0+yMIHVCqyIf4by1gxAjqQ92iKv3bQ/JctNVUEpSlU=" || got != "[10.90.0.7/32 10.0.7.0/24]" {
		t.Errorf("peer %s's allowed IPs %s", split[0].PublicKey, got)
	}

	// A bad entry is an error naming the source and the labels; the good one is kept.
	bad := `wireguard_sent_bytes_total{interface="wg0",public_key="2S7mA0vEMethCNQrJpJKE81/JmhgtB+tHHLYQhgM6kk=",allowed_ip_0="10.0.0.1",allowed_subnet_0="32",allowed_ip_1="fd86:ea04:::4",allowed_subnet_1="128"} 1` + "\n"
	peers, errs := ParseExporter("exp", []byte(bad), time.Now())
	if len(peers) != 1 || fmt.Sprint(peers[0].AllowedIPs) != "[10.0.0.1/32]" {
		t.Fatalf("peers %+v", peers)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "exp:") || !strings.Contains(errs[0].Error(), `allowed_ip_1="fd86:ea04:::4"`) {
		t.Fatalf("errors %v, want one naming exp and allowed_ip_1", errs)
	}
}

func TestParseExporterBadLine(t *testing.T) {
	in := "wireguard_sent_bytes_total{interface=\"wg0\",public_key=\"2S7mA0vEMethCNQrJpJKE81/JmhgtB+tHHLYQhgM6kk=\"} 5\n" +
		"wireguard_sent_bytes_total{interface=\"wg0\" 7\n" +
		"wireguard_received_bytes_total{interface=\"wg0\",public_key=\"bogus\"} 1\n" +
		"wireguard_received_bytes_total{interface=\"wg0\",public_key=\"2S7mA0vEMethCNQrJpJKE81/JmhgtB+tHHLYQhgM6kk=\"} 9\n"
	peers, errs := ParseExporter("exp", []byte(in), time.Now())
	if len(peers) != 1 || peers[0].TxBytes != 5 || peers[0].RxBytes != 9 {
		t.Fatalf("peers %+v", peers)
	}
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "exp:2:") || !strings.Contains(errs[1].Error(), "bogus") {
		t.Fatalf("errors %v, want line 2 and the bogus key", errs)
	}
}

func FuzzParseDump(f *testing.F) {
	f.Add(readTestdata(f, "mindflavor-wg-show-all-dump-issue19.txt"))
	f.Add([]byte("wg0\tk\t(none)\t(none)\t(none)\t0\t0\t0\toff\n\n\t\t\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		peers, errs := ParseDump("fuzz", b)
		for _, p := range peers {
			if p.PublicKey == "" || p.Interface == "" {
				t.Fatalf("peer without key or interface: %+v", p)
			}
		}
		for _, e := range errs {
			var le *scrape.LineError
			if !errors.As(e, &le) || le.Line < 1 {
				t.Fatalf("error without a line: %v", e)
			}
		}
	})
}

func FuzzParseExporter(f *testing.F) {
	for _, n := range []string{"mdlayher-readme-metrics.prom", "mindflavor-readme-metrics-allowed_ips.prom", "mindflavor-readme-metrics-friendly_name.prom", "mindflavor-test-issue19-separate-allowed-ips.prom"} {
		f.Add(readTestdata(f, n))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		peers, _ := ParseExporter("fuzz", b, time.Unix(1700000000, 0))
		for _, p := range peers {
			if p.PublicKey == "" || p.Interface == "" {
				t.Fatalf("peer without key or interface: %+v", p)
			}
		}
	})
}
