package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/lab"
)

// TestLabSoak is the 10-minute soak of `make test`: the lab and every Meridian module in
// this process, on the soak's schedule scaled to 10 minutes (lab/soak.go), with the
// shipped SLOs and steering defaults. Every invariant of the report must hold; the report
// and its BENCH lines are logged. MERIDIAN_SOAK_DURATION changes the length,
// MERIDIAN_SOAK_HEAP_PROFILE names a file for a heap profile at the end; -short skips.
func TestLabSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes 10 minutes")
	}
	d := 10 * time.Minute
	if v := os.Getenv("MERIDIAN_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("MERIDIAN_SOAK_DURATION: %v", err)
		}
	}
	specs, _ := filepath.Glob("../../alerts/slos/*.yaml")
	ctx, cfg, l, logger := labSetup(t, "soak", "-ruler.spec-files="+strings.Join(specs, ","))
	report, err := runSoak(ctx, cfg, l, labToken, d, os.Getenv("MERIDIAN_SOAK_HEAP_PROFILE"), logger)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	report.Write(&out)
	t.Log("\n" + out.String())
	if failed := report.Failed(); len(failed) > 0 {
		t.Errorf("soak invariants broken:\n  %s", strings.Join(failed, "\n  "))
	}
}

// labToken is the API token of the lab tests.
const labToken = "lab-token"

// labSetup starts the lab for a test of Meridian over it: the configuration of every
// module pointed at the lab (its store in database db, its state under the test's
// directory, extra flags last), the lab, and the log file and logger both write to. The
// context ends with the test.
func labSetup(t *testing.T, db string, extra ...string) (context.Context, *Config, *lab.Lab, *slog.Logger) {
	t.Helper()
	dir := t.TempDir()
	logs, err := os.Create(filepath.Join(dir, "meridian.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after Meridian and the lab have stopped: the whole log
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("meridian log (%s):\n%s", db, lastLines(string(b), 40))
		}
	})
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(labToken), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{
		fmt.Sprintf("-server.listen-address=127.0.0.1:%d", amtest.FreePort(t)), "-server.token-file=" + tokenFile,
		"-storage.path=" + enginePath, "-storage.database=" + db, "-pipeline.spool.path=" + filepath.Join(dir, "spool"),
		"-ruler.data-dir=" + filepath.Join(dir, "ruler"), "-hubble.state-dir=" + filepath.Join(dir, "hubble"),
		fmt.Sprintf("-steering.dns.listen=127.0.0.1:%d", amtest.FreePort(t)), "-steering.dns.zone=" + lab.Zone,
	}, extra...)
	cfg, err := parseConfig(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l, err := lab.Start(ctx, lab.Config{ListenAddress: "127.0.0.1:0", Testdata: "../../testdata"}, labToken, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-l.Done() }) // the lab's namespaces go before the test ends
	labOverlay(cfg, l.Endpoints())
	l.UseDNS(cfg.Steering.DNS.Listen)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return ctx, cfg, l, logger
}
