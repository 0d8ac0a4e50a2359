package kitlog

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/pkg/errors"

	"github.com/meridianhq/meridian/internal/testlog"
)

// TestErrorsWithoutStack: dskit wraps errors with github.com/pkg/errors, whose %+v (what
// slog's text handler uses) prints a stack trace; the adapter logs the text only.
func TestErrorsWithoutStack(t *testing.T) {
	var buf testlog.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Log("level", "warn", "msg", "module failed", "err", errors.Wrap(errors.New("boom"), "error initialising module: ruler"))
	out := buf.String()
	if !strings.Contains(out, `level=WARN msg="module failed" err="error initialising module: ruler: boom"`) {
		t.Fatalf("got %q", out)
	}
	if strings.Contains(out, ".go:") {
		t.Fatalf("stack trace logged: %q", out)
	}
}
