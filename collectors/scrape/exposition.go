// Package scrape is the plumbing the WireGuard and Ceph collectors share: a tolerant
// Prometheus text-exposition parser, an HTTP fetch that reports the status it got, the
// per-source metrics every collector exposes, and counter-rate arithmetic.
package scrape

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

// LineError is one bad line of an input, named by its source and 1-based line number.
type LineError struct {
	Source string
	Line   int
	Err    error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.Source, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Sample is one series of an exposition.
type Sample struct {
	Name   string
	Labels labels.Labels // includes __name__
	Value  float64
}

// Exposition parses Prometheus text exposition with Prometheus's own parser (textparse),
// calling fn for every series whose metric name want accepts (want nil: all series).
//
// textparse stops at the first bad line. The text format holds one entry per line, so
// the bad line is the first non-blank line after the last entry the parser returned:
// Exposition records a LineError for it and starts a new parser on the line after, so
// the good lines around a bad one still pass. Each restart begins where the previous
// parser stopped, so the whole input is read once however many lines are bad.
//
// Like textparse, it may write one byte into b's spare capacity.
func Exposition(source string, b []byte, want func(name []byte) bool, fn func(Sample)) []error {
	if cap(b) == len(b) {
		// textparse appends a newline; give it room so restarts do not copy the rest.
		b = append(make([]byte, 0, len(b)+1), b...)
	}
	var (
		errs  []error
		st    = labels.NewSymbolTable()
		lbls  labels.Labels
		start int // where the current parser began
		line  = 1 // line number at start
	)
	for start < len(b) {
		p := textparse.NewPromParser(b[start:], st, false)
		last := -1 // offset (relative to start) of the last good entry's end
		var err error
		for {
			var e textparse.Entry
			e, err = p.Next()
			if err != nil {
				break
			}
			var at []byte // a slice of the entry inside the input, to locate it
			switch e {
			case textparse.EntrySeries:
				series, _, v := p.Series()
				at = series
				name := metricName(series)
				if want != nil && !want(name) {
					break
				}
				p.Labels(&lbls)
				fn(Sample{Name: lbls.Get(labels.MetricName), Labels: lbls, Value: v})
			case textparse.EntryType:
				at, _ = p.Type()
			case textparse.EntryHelp:
				at, _ = p.Help()
			case textparse.EntryComment:
				at = p.Comment()
			default:
				// Histograms and unit entries do not occur in the classic text format.
			}
			if off := offsetIn(b[start:], at); off >= 0 {
				// The entry's last byte: a quoted label value may hold a raw newline.
				last = off + len(at) - 1
			}
		}
		// The bad line is the first non-blank one after the line holding the last entry.
		rest := b[start:]
		pos := 0
		if last >= 0 {
			pos = nextLine(rest, last)
		}
		lineNo := line + bytes.Count(rest[:pos], []byte{'\n'})
		for pos < len(rest) {
			end := nextLine(rest, pos)
			if len(bytes.Trim(rest[pos:end], " \t\n")) > 0 { // blank as textparse sees it
				break
			}
			pos = end
			lineNo++
		}
		if errors.Is(err, io.EOF) {
			if pos == len(rest) {
				break // the whole input was read
			}
			// textparse's lexer takes a NUL byte for the end of input.
			err = errors.New("unreadable line (NUL byte)")
		}
		errs = append(errs, &LineError{Source: source, Line: lineNo, Err: err})
		next := nextLine(rest, pos)
		line = lineNo + 1
		start += next
	}
	return errs
}

// metricName is the name at the start of a series ("name{...}" or "name value"); empty for
// the quoted-name form ({"name"}), which a want filter therefore never selects.
func metricName(series []byte) []byte {
	if i := bytes.IndexAny(series, "{ \t"); i >= 0 {
		return series[:i]
	}
	return series
}

// offsetIn returns where sub starts inside b, or -1 if sub is not a slice of b. textparse
// returns slices of its input buffer, which shares b's backing array.
func offsetIn(b, sub []byte) int {
	if len(sub) == 0 {
		return -1
	}
	off := cap(b) - cap(sub)
	if off < 0 || off >= len(b) || &b[off] != &sub[0] {
		return -1
	}
	return off
}

// nextLine returns the offset just after the newline ending the line that holds pos.
func nextLine(b []byte, pos int) int {
	if i := bytes.IndexByte(b[pos:], '\n'); i >= 0 {
		return pos + i + 1
	}
	return len(b)
}
