package keepalived

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridianhq/meridian/internal/wait"
	"github.com/meridianhq/meridian/pipeline"
)

// A malformed FIFO line is counted under its source and skipped; the good line after it
// is applied. When the writer goes away (keepalived exits or is killed) the node's
// instances become UNKNOWN, ending a mastership nobody exercises.
func TestFIFOBadLineAndWriterGone(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "notify.fifo")
	var mu sync.Mutex
	var trs []*pipeline.VRRPTransition
	reg := prometheus.NewRegistry()
	c, err := New(Config{Interval: time.Hour, Nodes: []Node{{POP: "lon", Node: "a", FIFO: fifo}}}, Deps{
		Appender: pipeline.AppenderFunc(func(_ context.Context, recs ...pipeline.Record) error {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				trs = append(trs, r.(*pipeline.VRRPTransition))
			}
			return nil
		}), Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	start(t, c)
	wait.Until(t, 5*time.Second, "the collector making the FIFO", func() bool { _, err := os.Stat(fifo); return err == nil })
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // blocks until the collector's reader opens it
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("INSTANCE VI_1 MASTER\n" + `INSTANCE "VI_1" MASTER 150` + "\n"); err != nil {
		t.Fatal(err)
	}
	last := func() *pipeline.VRRPTransition {
		mu.Lock()
		defer mu.Unlock()
		if len(trs) == 0 {
			return nil
		}
		return trs[len(trs)-1]
	}
	wait.Until(t, 5*time.Second, "a MASTER", func() bool { l := last(); return l != nil && l.To == pipeline.VRRPMaster })
	if v := testutil.ToFloat64(c.parseErrors.WithLabelValues("fifo:" + fifo)); v != 1 {
		t.Errorf("parse errors %v, want 1", v)
	}
	if v := testutil.ToFloat64(c.master.WithLabelValues("lon", "VI_1", "a")); v != 1 {
		t.Errorf("master gauge %v, want 1", v)
	}
	w.Close()
	wait.Until(t, 5*time.Second, "a UNKNOWN once the writer is gone", func() bool { l := last(); return l != nil && l.To == pipeline.VRRPUnknown })
	if v := testutil.ToFloat64(c.master.WithLabelValues("lon", "VI_1", "a")); v != 0 {
		t.Errorf("master gauge %v after the daemon left, want 0", v)
	}
}
