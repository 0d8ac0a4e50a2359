package hubble

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meridianhq/meridian/internal/testtime"
	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
)

// TestDecoderMatchesStandard is the differential test of the wire decoder: every captured
// flow in testdata/hubble goes through the path before it (the standard protobuf decode,
// then refParse) and through the decoder, as sent and in two other valid wire forms of
// the same message (top-level fields in reverse order; every sub-message split in two
// occurrences, which protobuf merges). Every stored column must match: the records'
// Native blocks are byte-for-byte equal, and so are the edges built from them.
func TestDecoderMatchesStandard(t *testing.T) {
	entries, err := os.ReadDir(samples)
	if err != nil {
		t.Fatal(err)
	}
	p := NewParser(nil)
	dec := newDecoder(p) // one for all: its memory of endpoints must not change a result
	enc := storage.NewEncoder()
	recv := testtime.Day.Add(3*time.Hour + 4*time.Minute + 5*time.Second)
	n := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var oldRecs, newRecs []pipeline.Record
		var oldResp, newResp []bool
		for i, m := range load(t, e.Name()) {
			canonical, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			for form, wire := range map[string][]byte{"canonical": canonical, "reversed": reversed(t, canonical), "split": split(t, canonical)} {
				var std observer.GetFlowsResponse
				if err := proto.Unmarshal(wire, &std); err != nil {
					t.Fatalf("%s %d %s: %v", e.Name(), i, form, err)
				}
				fallback := recv
				if ts := std.GetTime(); ts != nil && ts.IsValid() {
					fallback = ts.AsTime()
				}
				want := refParse(p, std.GetFlow(), "kind", fallback)

				resp, err := readResponse(wire)
				if err != nil || resp.flow == nil || resp.other {
					t.Fatalf("%s %d %s: response %+v, %v", e.Name(), i, form, resp, err)
				}
				fallback = recv
				if resp.hasTime {
					fallback = resp.time
				}
				var got pipeline.Flow
				info, err := dec.flow(resp.flow, "kind", fallback, &got)
				if err != nil {
					t.Fatalf("%s %d %s: %v", e.Name(), i, form, err)
				}
				if dump(got) != dump(want) || !got.M.Time.Equal(want.M.Time) {
					t.Fatalf("%s %d %s:\n got %s\nwant %s", e.Name(), i, form, dump(got), dump(want))
				}
				if info != refInfo(std.GetFlow()) {
					t.Fatalf("%s %d %s: flow facts %+v, want %+v", e.Name(), i, form, info, refInfo(std.GetFlow()))
				}
				if form == "split" {
					oldRecs, newRecs = append(oldRecs, &want), append(newRecs, &got)
					oldResp, newResp = append(oldResp, refIsResponse(std.GetFlow().GetL7())), append(newResp, info.response)
				}
				n++
			}
		}
		oldBlock, err := enc.Encode(pipeline.KindFlow, oldRecs)
		if err != nil {
			t.Fatal(err)
		}
		newBlock, err := enc.Encode(pipeline.KindFlow, newRecs)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(oldBlock, newBlock) {
			t.Errorf("%s: the Native blocks of the flows differ", e.Name())
		}
		if o, w := edgesOf(oldRecs, oldResp), edgesOf(newRecs, newResp); dumpEdges(o) != dumpEdges(w) {
			t.Errorf("%s: edges differ:\n old %s\n new %s", e.Name(), dumpEdges(o), dumpEdges(w))
		}
	}
	if n < 3*1100 { // 1,112 samples
		t.Fatalf("only %d flows compared", n)
	}
}

func edgesOf(recs []pipeline.Record, response []bool) []*pipeline.FlowEdge {
	a := newEdgeAggregator(pipeline.Meta{Cluster: "kind"}, time.Second, time.Second, 10000, 1000, func(int) {})
	var out []*pipeline.FlowEdge
	for i, r := range recs {
		for _, e := range a.add(r.(*pipeline.Flow), response[i], false) {
			out = append(out, e.(*pipeline.FlowEdge))
		}
	}
	for _, e := range a.flush() {
		out = append(out, e.(*pipeline.FlowEdge))
	}
	return out
}

// dumpEdges prints edges in a stable order (an interval's edges come from a map).
func dumpEdges(es []*pipeline.FlowEdge) string {
	var lines []string
	for _, e := range es {
		lines = append(lines, e.M.Time.String()+" "+dumpEdge(e))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// dumpEdge prints an edge without its time (fmt sorts the drop reasons' map).
func dumpEdge(e *pipeline.FlowEdge) string {
	c := *e
	c.M.Time = time.Time{}
	return fmt.Sprintf("%+v", c)
}

// fieldsOf splits a message into its top-level fields, each with its tag.
func fieldsOf(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatal("bad tag")
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			t.Fatal("bad field")
		}
		out = append(out, b[:n+m])
		b = b[n+m:]
	}
	return out
}

// reversed is the message with its top-level fields in reverse order, and so is the Flow
// inside it: the same message for protobuf, as long as no field repeats.
func reversed(t *testing.T, b []byte) []byte {
	var out []byte
	fs := fieldsOf(t, b)
	for i := len(fs) - 1; i >= 0; i-- {
		f := fs[i]
		num, typ, n := protowire.ConsumeTag(f)
		if num == 1 && typ == protowire.BytesType { // the Flow
			v, _ := protowire.ConsumeBytes(f[n:])
			var inner []byte
			fl := fieldsOf(t, v)
			for j := len(fl) - 1; j >= 0; j-- {
				inner = append(inner, fl[j]...)
			}
			out = protowire.AppendTag(out, 1, protowire.BytesType)
			out = protowire.AppendBytes(out, inner)
			continue
		}
		out = append(out, f...)
	}
	return out
}

// split writes every sub-message of the Flow (and of its sub-messages, recursively) as
// two occurrences, its first field and the rest: protobuf merges them into the same
// message.
func split(t *testing.T, b []byte) []byte {
	var out []byte
	for _, f := range fieldsOf(t, b) {
		num, typ, n := protowire.ConsumeTag(f)
		if num == 1 && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(f[n:])
			out = protowire.AppendTag(out, 1, protowire.BytesType)
			out = protowire.AppendBytes(out, splitFields(t, v, 0))
			continue
		}
		out = append(out, f...)
	}
	return out
}

// splitFields splits the sub-messages among a message's fields. Which fields hold
// messages is read off the Flow's schema, so strings are left alone.
func splitFields(t *testing.T, b []byte, depth int) []byte {
	var out []byte
	for _, f := range fieldsOf(t, b) {
		num, typ, n := protowire.ConsumeTag(f)
		v, _ := protowire.ConsumeBytes(f[n:])
		if typ != protowire.BytesType || depth > 0 || !flowMessageFields[num] {
			out = append(out, f...)
			continue
		}
		parts := fieldsOf(t, v)
		if len(parts) < 2 {
			out = append(out, f...)
			continue
		}
		first := parts[0]
		var rest []byte
		for _, p := range parts[1:] {
			rest = append(rest, p...)
		}
		out = protowire.AppendTag(out, num, protowire.BytesType)
		out = protowire.AppendBytes(out, first)
		out = protowire.AppendTag(out, num, protowire.BytesType)
		out = protowire.AppendBytes(out, rest)
	}
	return out
}

// flowMessageFields are the Flow's sub-message fields the decoder reads: time, IP, l4,
// source, destination, l7, is_reply.
var flowMessageFields = map[protowire.Number]bool{1: true, 5: true, 6: true, 8: true, 9: true, 15: true, 26: true}
