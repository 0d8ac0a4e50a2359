// Package kitlog lets dskit, which logs through go-kit's log.Logger, write through
// log/slog, the one logger of Meridian's components.
package kitlog

import (
	"fmt"
	"log/slog"

	"github.com/go-kit/log"
)

// New adapts l to go-kit's interface.
func New(l *slog.Logger) log.Logger { return logger{l} }

type logger struct{ l *slog.Logger }

func (g logger) Log(kv ...any) error {
	msg, level := "", slog.LevelInfo
	attrs := make([]any, 0, len(kv))
	for i := 0; i+1 < len(kv); i += 2 {
		k := fmt.Sprint(kv[i])
		switch k {
		case "msg":
			msg = fmt.Sprint(kv[i+1])
		case "level":
			if fmt.Sprint(kv[i+1]) == "debug" {
				level = slog.LevelDebug
			} else if v := fmt.Sprint(kv[i+1]); v == "warn" || v == "error" {
				level = slog.LevelWarn
			}
		default:
			v := kv[i+1]
			if err, ok := v.(error); ok {
				v = err.Error() // slog would print dskit's wrapped errors with %+v: a stack trace
			}
			attrs = append(attrs, k, v)
		}
	}
	g.l.Log(nil, level, msg, attrs...)
	return nil
}
