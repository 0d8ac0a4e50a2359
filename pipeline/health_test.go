package pipeline

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridianhq/meridian/internal/wait"
)

// A spool on a full disk (a real, tiny tmpfs) makes Health report it with the kernel's
// reason; once space is back and a block is spooled, Health clears.
func TestHealthReportsFullSpool(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	cfg := testConfig(t)
	cfg.Spool.Path = dir
	p, _ := start(t, cfg, newFakeInserter(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Fill the disk to the last byte.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 4096))
	}
	f.Close()
	if !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("filling the tmpfs: %v", err)
	}

	if err := p.Append(ctx, tunnels(0, 10)...); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	err = p.Health()
	if err == nil || !strings.Contains(err.Error(), "spool "+dir+" cannot write") || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("Health with a full spool disk: %v", err)
	}

	os.Remove(filler)
	if err := p.Append(ctx, tunnels(10, 10)...); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Health(); err != nil {
		t.Fatalf("Health once the spool writes again: %v", err)
	}
}

// Inserts that keep failing for not_ready_after make Health report the kind, how long and
// why; one success clears it.
func TestHealthReportsFailingInserts(t *testing.T) {
	cfg := testConfig(t)
	cfg.NotReadyAfter = 300 * time.Millisecond
	ins := newFakeInserter()
	ins.setFail(func(Block) error { return errors.New("connection refused") })
	p, _ := start(t, cfg, ins, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Append(ctx, tunnels(0, 3)...); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	wait.Until(t, 10*time.Second, "Health to report the failing inserts", func() bool { return p.Health() != nil })
	if waited := time.Since(t0); waited < 200*time.Millisecond {
		t.Errorf("reported after %v, before not_ready_after (a blip must not flap readiness)", waited)
	}
	if err := p.Health(); !strings.Contains(err.Error(), "tunnel") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Health: %v, want the kind and the insert's error", err)
	}
	ins.setFail(nil)
	wait.Until(t, 10*time.Second, "Health to clear once an insert succeeds", func() bool { return p.Health() == nil })
}
