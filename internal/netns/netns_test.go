package netns

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func needNamespaces(t *testing.T) {
	t.Helper()
	reason, err := Unavailable()
	if err != nil {
		t.Fatal(err)
	}
	if reason != "" {
		t.Skip("skipping: " + reason)
	}
}

func namespaceExists(t *testing.T, name string) bool {
	t.Helper()
	all, err := namespaces()
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(all, name)
}

// TestOwnerKilledBeforeClose is the child process of TestNewSweepsWhatAKilledOwnerLeft:
// it makes a namespace, says its name and waits to be killed.
func TestOwnerKilledBeforeClose(t *testing.T) {
	if os.Getenv("MERIDIAN_NETNS_CHILD") != "1" {
		t.Skip("run by TestNewSweepsWhatAKilledOwnerLeft")
	}
	n, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := n.AddNamespace("left")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("namespace", ns)
	select {}
}

func TestNewSweepsWhatAKilledOwnerLeft(t *testing.T) {
	needNamespaces(t)
	live, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Close() })
	kept, err := live.AddNamespace("kept")
	if err != nil {
		t.Fatal(err)
	}

	child := exec.Command(os.Args[0], "-test.run=^TestOwnerKilledBeforeClose$", "-test.v")
	child.Env = append(os.Environ(), "MERIDIAN_NETNS_CHILD=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	named := make(chan string, 1)
	go func() {
		for sc := bufio.NewScanner(out); sc.Scan(); {
			if name, ok := strings.CutPrefix(sc.Text(), "namespace "); ok {
				named <- name
			}
		}
		close(named)
	}()
	var left string
	select {
	case left = <-named:
	case <-time.After(30 * time.Second):
	}
	child.Process.Kill() // SIGKILL: its Close never runs
	child.Wait()
	if left == "" {
		t.Fatal("the child made no namespace")
	}
	if !namespaceExists(t, left) {
		t.Fatalf("%s gone before any sweep: the test shows nothing", left)
	}

	n, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if namespaceExists(t, left) {
		t.Errorf("New left the killed owner's namespace %s", left)
	}
	tag := strings.TrimPrefix(strings.TrimSuffix(left, "-left"), "m")
	if _, err := os.Stat(filepath.Join(ownersDir, tag)); !os.IsNotExist(err) {
		t.Errorf("the killed owner's record is still there: %v", err)
	}
	if !namespaceExists(t, kept) {
		t.Errorf("New removed %s, whose owner is alive", kept)
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ownersDir, live.Tag)); !os.IsNotExist(err) {
		t.Errorf("Close left its owner record: %v", err)
	}
	if err := live.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}
