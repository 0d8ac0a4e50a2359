package chdb

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envChild makes the test binary a child process that opens the engine (checking that
// the Go runtime's signal handlers survive it), writes a row and prints the row count;
// then "panic" or "nilderef" fault in a goroutine, "query" exits 0. envChildPath is the
// child's data directory.
const (
	envChild     = "MERIDIAN_CHDB_TEST_CHILD"
	envChildPath = "MERIDIAN_CHDB_TEST_CHILD_PATH"
	faultLine    = "faulting now"
)

func runChild(mode string) int {
	before, err := savedSignals()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	db, err := Open(LibPath(""), os.Getenv(envChildPath))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	// Open leaves exactly the handlers the Go runtime had installed.
	after, err := savedSignals()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	for _, s := range engineSignals {
		if before[s] != after[s] {
			fmt.Fprintf(os.Stderr, "%s: handler %x before Open, %x after\n", s, before[s], after[s])
			return 4
		}
	}
	ctx := context.Background()
	for _, q := range []string{"CREATE DATABASE IF NOT EXISTS crash",
		"CREATE TABLE IF NOT EXISTS crash.t (a UInt64) ENGINE = MergeTree ORDER BY a", "INSERT INTO crash.t VALUES (1)"} {
		if _, err := db.Query(ctx, "", q, ""); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
	out, err := db.Query(ctx, "", "SELECT count() FROM crash.t", "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	fmt.Printf("rows %s", out)
	if mode == "query" {
		return 0
	}
	fmt.Println(faultLine)
	go func() {
		switch mode {
		case "panic":
			panic("meridian test: an unrecovered panic")
		case "nilderef":
			var p *struct{ n int }
			fmt.Println(p.n)
		}
	}()
	time.Sleep(time.Hour) // the fault must end the process first
	return 5
}

// child starts the test binary as a child of the given mode on path.
func child(t *testing.T, mode, path string) (*exec.Cmd, *bytes.Buffer, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+mode, envChildPath+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, &stderr, bufio.NewScanner(stdout)
}

// waitExit waits for cmd up to d; it fails the test when cmd is still running then.
func waitExit(t *testing.T, cmd *exec.Cmd, d time.Duration, what string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s: still running after %s", what, d)
		return nil
	}
}

// TestGoFaultEndsProcessWithEngineLoaded: with the engine open, an unrecovered panic
// and a nil dereference in a goroutine each end the process within seconds, with a
// non-zero exit and Go's stack trace (not the engine's handler freezing it), and the
// next process opens the same data directory and queries it.
func TestGoFaultEndsProcessWithEngineLoaded(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{"panic", "panic: meridian test: an unrecovered panic"},
		{"nilderef", "panic: runtime error: invalid memory address or nil pointer dereference"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			path := t.TempDir()
			cmd, stderr, stdout := child(t, tc.mode, path)
			// Booting the engine loads a 566 MB library: allow for a loaded machine.
			started := make(chan time.Time, 1)
			go func() {
				for stdout.Scan() {
					if stdout.Text() == faultLine {
						started <- time.Now()
					}
				}
				close(started)
			}()
			var faulted time.Time
			select {
			case ts, ok := <-started:
				if !ok {
					_ = cmd.Wait()
					t.Fatalf("child ended before faulting; stderr:\n%s", stderr)
				}
				faulted = ts
			case <-time.After(2 * time.Minute):
				t.Fatalf("child did not open the engine within 2m; stderr:\n%s", stderr)
			}
			err := waitExit(t, cmd, 10*time.Second, "child after its fault")
			took := time.Since(faulted)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() <= 0 {
				t.Fatalf("exit: %v (want a non-zero exit status); stderr:\n%s", err, stderr)
			}
			if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Fatalf("killed by %s, want Go's exit after its panic; stderr:\n%s", ws.Signal(), stderr)
			}
			out := stderr.String()
			for _, want := range []string{tc.want, "goroutine ", "crash_test.go"} {
				if !strings.Contains(out, want) {
					t.Errorf("stderr lacks %q:\n%s", want, out)
				}
			}
			t.Logf("%s: exit %d %s after the fault", tc.mode, exit.ExitCode(), took.Round(time.Millisecond))

			// Restart on the same path: the engine's lock died with the process.
			again, stderr2, stdout2 := child(t, "query", path)
			var rows []string
			for stdout2.Scan() {
				rows = append(rows, stdout2.Text())
			}
			if err := waitExit(t, again, 2*time.Minute, "restarted child"); err != nil {
				t.Fatalf("restart on %s: %v; stderr:\n%s", path, err, stderr2)
			}
			// The faulted run wrote one row, the restart another: both are there.
			if len(rows) != 1 || rows[0] != "rows 2" || strings.Contains(stderr2.String(), "Cannot lock file") {
				t.Fatalf("restart: stdout %q, stderr:\n%s", rows, stderr2)
			}
		})
	}
}
