package hubble

import (
	"context"
	"runtime"
	"testing"

	"github.com/cilium/cilium/api/v1/observer"
)

// TestReceiveGarbage holds the receive path to its allocations per flow: gRPC reads each
// flow's DATA frame into framePool (grpcPoolingThreshold lowered), and the relay sends
// from it, so a flow costs gRPC's bookkeeping only: about 370 bytes, both sides in this
// process together, against 1,750 with gRPC's own threshold (a new frame per flow).
func TestReceiveGarbage(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops items at random")
	}
	const n = 50_000
	addr, stop, err := serveReplay(n)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cfg := testConfig()
	dl, err := newDialer(&cfg, RelayConfig{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	in := newInbox()
	closeConn, err := dl.open(context.Background(), &observer.GetFlowsRequest{Follow: true}, in)
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn()
	var taken batch
	for got := 0; got < n; got += taken.len() {
		if ended, err := in.take(&taken); ended {
			t.Fatal(err)
		}
		if taken.len() == 0 {
			<-in.wake
		}
	}
	runtime.ReadMemStats(&after)
	perFlow := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per flow, relay and receive", perFlow)
	if perFlow > 700 {
		t.Errorf("%d bytes allocated per flow received, want at most 700: are DATA frames pooled?", perFlow)
	}
}

// TestBufPool holds the pool's classes: a buffer of at least the size asked, from the
// smallest class that fits, back into the class it fills.
func TestBufPool(t *testing.T) {
	var p bufPool
	for _, c := range []struct{ n, cap int }{{0, 256}, {1, 256}, {256, 256}, {257, 512}, {950, 1024}, {16 << 10, 16 << 10}, {32 << 10, 32 << 10}, {40_000, 40_000}} {
		b := p.Get(c.n)
		if len(*b) != c.n || cap(*b) != c.cap {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", c.n, len(*b), cap(*b), c.cap)
		}
		p.Put(b)
	}
}
