package ruler

import (
	"fmt"
	"os"
	"testing"

	"github.com/meridianhq/meridian/storage/chdb"
)

// TestMain loads the embedded engine, as Meridian's process does, before any test, so a
// Go fault in the API or the rules (a nil dereference) meets the signal handlers it
// meets in production: without Open keeping Go's handlers it would freeze the test, not
// be recovered by net/http. The route sweep also counts recovered panics as crashes.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meridian-ruler-test-engine-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := chdb.Open(chdb.LibPath(""), dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
