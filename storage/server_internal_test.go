package storage

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/pipeline"
)

// The server driver sends the encoder's block through ch-go columns: decoding it and
// encoding those columns again gives the same bytes.
func TestDecodeNativeRoundTrip(t *testing.T) {
	now := testtime.Day.Add(time.Hour + 2*time.Minute + 3456789123*time.Nanosecond)
	m := pipeline.Meta{Time: now, Collector: "c", Site: "s", Cluster: "k", Node: "n"}
	batches := map[pipeline.Kind][]pipeline.Record{
		pipeline.KindTunnelStat: {&pipeline.TunnelStat{M: m, Interface: "wg0", PublicKey: "k", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, RxBytes: 7}},
		pipeline.KindFlow: {
			&pipeline.Flow{M: m, Source: pipeline.Endpoint{Workload: "a", IP: netip.MustParseAddr("10.1.2.3"), Labels: []string{"x=y"}}, Verdict: "FORWARDED"},
			&pipeline.Flow{M: m, Destination: pipeline.Endpoint{Workload: "b"}, Verdict: "DROPPED"},
		},
		pipeline.KindFlowEdge: {&pipeline.FlowEdge{M: m, DropReasons: map[string]uint64{"POLICY_DENIED": 2}, Flows: 3}},
		pipeline.KindOSDStat:  {&pipeline.OSDStat{M: m, OSD: 1, Up: true}},
	}
	enc := NewEncoder()
	for kind, recs := range batches {
		native, err := enc.Encode(kind, recs)
		if err != nil {
			t.Fatal(err)
		}
		input, err := decodeNative(pipeline.Block{Kind: kind, Rows: len(recs), Native: native})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		var buf proto.Buffer
		if err := (proto.Block{Columns: len(input), Rows: len(recs)}).EncodeRawBlock(&buf, 0, input); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Buf, native) {
			t.Errorf("%s: re-encoded block differs (%d vs %d bytes)", kind, len(buf.Buf), len(native))
		}
		if _, err := decodeNative(pipeline.Block{Kind: kind, Rows: len(recs), Native: native[:len(native)-1]}); err == nil {
			t.Errorf("%s: truncated block decoded without error", kind)
		}
		if _, err := decodeNative(pipeline.Block{Kind: pipeline.KindProbe, Rows: len(recs), Native: native}); err == nil {
			t.Errorf("%s block decoded as probes without error", kind)
		}
	}
}

func TestServerPasswordSources(t *testing.T) {
	cfg := Config{Database: "meridian", TTL: DefaultTTLs()}
	cfg.ClickHouse.DSN = "clickhouse://meridian@127.0.0.1:9440/?secure=true"
	t.Setenv(EnvPassword, "fromenv")
	srv, err := openServer(cfg, newSchema("meridian", "", cfg.TTL))
	if err != nil {
		t.Fatal(err)
	}
	if srv.opts.User != "meridian" || srv.opts.TLS == nil {
		t.Fatalf("dsn: user %q tls %v", srv.opts.User, srv.opts.TLS != nil)
	}
	srv, _ = openServer(cfg, newSchema("meridian", "", cfg.TTL))
	if srv.opts.Password != "fromenv" {
		t.Fatal("env password not used")
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("fromfile\n"), 0o600)
	cfg.ClickHouse.PasswordFile = pw
	srv, _ = openServer(cfg, newSchema("meridian", "", cfg.TTL))
	if srv.opts.Password != "fromfile" {
		t.Fatal("password file not used before the environment")
	}
	cfg.ClickHouse.DSN = "clickhouse://meridian:fromdsn@127.0.0.1:9440/"
	if err := cfg.Validate(); err == nil || strings.Contains(err.Error(), "fromdsn") {
		t.Fatalf("a password in the DSN: %v", err)
	}
}
