package topomap

import (
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
)

// MarshalJSON writes n exactly as encoding/json writes it from its tags, without
// reflection: reflection was most of the cost of encoding a snapshot of 60,000 elements,
// live or rebuilt from the past (TestEncodingEqualsReflection keeps the two equal).
func (n *Node) MarshalJSON() ([]byte, error) { return n.appendJSON(make([]byte, 0, 192)) }

// appendJSON appends n's encoding to b: a snapshot writes every element into one buffer.
func (n *Node) appendJSON(b []byte) ([]byte, error) {
	b = appendField(b, `{"id":`, n.ID)
	b = appendField(b, `,"kind":`, n.Kind)
	b = appendField(b, `,"label":`, n.Label)
	b = appendField(b, `,"status":`, n.Status)
	if n.Site != "" {
		b = appendField(b, `,"site":`, n.Site)
	}
	if n.Cluster != "" {
		b = appendField(b, `,"cluster":`, n.Cluster)
	}
	if n.Parent != "" {
		b = appendField(b, `,"parent":`, n.Parent)
	}
	var err error
	if n.Geo != nil {
		b = append(b, `,"geo":[`...)
		b, err = appendFloat(b, n.Geo[0], err)
		b = append(b, ',')
		b, err = appendFloat(b, n.Geo[1], err)
		b = append(b, ']')
	}
	b, err = appendRest(b, n.Metrics, n.Attrs, n.Alerts, n.Causes, n.Updated, err)
	return b, err
}

// MarshalJSON writes e as encoding/json writes it from its tags (see Node.MarshalJSON).
func (e *Edge) MarshalJSON() ([]byte, error) { return e.appendJSON(make([]byte, 0, 192)) }

func (e *Edge) appendJSON(b []byte) ([]byte, error) {
	b = appendField(b, `{"id":`, e.ID)
	b = appendField(b, `,"kind":`, e.Kind)
	b = appendField(b, `,"source":`, e.Source)
	b = appendField(b, `,"target":`, e.Target)
	b = appendField(b, `,"status":`, e.Status)
	return appendRest(b, e.Metrics, e.Attrs, e.Alerts, e.Causes, e.Updated, nil)
}

// appendRest writes the fields Node and Edge share, in their tag order, and closes the object.
func appendRest(b []byte, metrics map[string]float64, attrs map[string]string, alerts []string, causes []Cause, updated int64, err error) ([]byte, error) {
	var keys [16]string // the maps hold a few keys: sorted on the stack
	if len(metrics) > 0 {
		b = append(b, `,"metrics":{`...)
		for i, k := range sortedKeys(keys[:0], metrics) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b, err = appendFloat(b, metrics[k], err)
		}
		b = append(b, '}')
	}
	if len(attrs) > 0 {
		b = append(b, `,"attrs":{`...)
		for i, k := range sortedKeys(keys[:0], attrs) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, attrs[k])
		}
		b = append(b, '}')
	}
	if len(alerts) > 0 {
		b = append(b, `,"alerts":[`...)
		for i, a := range alerts {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, a)
		}
		b = append(b, ']')
	}
	if len(causes) > 0 { // few elements have causes: reflection is fine there
		c, cerr := json.Marshal(causes)
		if err == nil {
			err = cerr
		}
		b = append(append(b, `,"causes":`...), c...)
	}
	if updated != 0 {
		b = strconv.AppendInt(append(b, `,"updated":`...), updated, 10)
	}
	return append(b, '}'), err
}

func sortedKeys[V any](keys []string, m map[string]V) []string {
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func appendField(b []byte, name, v string) []byte {
	return appendString(append(b, name...), v)
}

// appendString quotes s as encoding/json does; strings of plain ASCII, nearly all of them,
// take the short way.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendFloat formats f as encoding/json does; NaN and infinities are an error, as there.
func appendFloat(b []byte, f float64, err error) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		if err == nil {
			err = fmt.Errorf("json: unsupported value: %s", strconv.FormatFloat(f, 'g', -1, 64))
		}
		return append(b, '0'), err
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 → 1e-7, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, err
}

// encode is json.Marshal(m), less encoding/json's second pass over each element's own
// encoding (it re-scans what a MarshalJSON returns: as costly as writing it).
func (m snapshotMsg) encode() ([]byte, error) {
	b := make([]byte, 0, 64+200*(len(m.Nodes)+len(m.Edges)))
	b = appendField(b, `{"type":`, m.Type)
	b = appendField(b, `,"epoch":`, m.Epoch)
	b = strconv.AppendUint(append(b, `,"seq":`...), m.Seq, 10)
	if m.At != 0 {
		b = strconv.AppendInt(append(b, `,"at":`...), m.At, 10)
	}
	var err error
	if m.Speed != 0 {
		b, err = appendFloat(append(b, `,"speed":`...), m.Speed, err)
	}
	b = append(b, `,"nodes":`...)
	b, err = appendAll(b, m.Nodes, err)
	b = append(b, `,"edges":`...)
	b, err = appendAll(b, m.Edges, err)
	return append(b, '}'), err
}

// parallelFrom is the number of elements from which a list is encoded in parallel chunks.
const parallelFrom = 4096

func appendAll[T interface{ appendJSON([]byte) ([]byte, error) }](b []byte, xs []T, err error) ([]byte, error) {
	if xs == nil {
		return append(b, "null"...), err
	}
	b = append(b, '[')
	if p := runtime.GOMAXPROCS(0); p > 1 && len(xs) >= parallelFrom {
		// A whole snapshot of tens of thousands of elements: each core encodes a chunk.
		chunks := slices.Collect(slices.Chunk(xs, (len(xs)+p-1)/p))
		parts, errs := make([][]byte, len(chunks)), make([]error, len(chunks))
		var wg sync.WaitGroup
		for i, c := range chunks {
			wg.Go(func() { parts[i], errs[i] = appendList(make([]byte, 0, 200*len(c)), c, nil) })
		}
		wg.Wait()
		for i, part := range parts {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, part...)
			if err == nil {
				err = errs[i]
			}
		}
		return append(b, ']'), err
	}
	b, err = appendList(b, xs, err)
	return append(b, ']'), err
}

// appendList appends xs' encodings separated by commas.
func appendList[T interface{ appendJSON([]byte) ([]byte, error) }](b []byte, xs []T, err error) ([]byte, error) {
	for i, x := range xs {
		if i > 0 {
			b = append(b, ',')
		}
		var xerr error
		b, xerr = x.appendJSON(b)
		if err == nil {
			err = xerr
		}
	}
	return b, err
}
