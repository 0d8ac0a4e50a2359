package storage

import (
	"bytes"
	"slices"
	"strconv"
	"testing"

	"github.com/ClickHouse/ch-go/proto"
)

// lowCard's bytes decode with ch-go's reference ColLowCardinality, for each key width.
func TestLowCardMatchesReference(t *testing.T) {
	for _, distinct := range []int{1, 256, 257, 65536, 65537} {
		c := newLowCard()
		var want []string
		for i := range 70000 {
			v := "v" + strconv.Itoa(i%distinct)
			if i%3 == 0 {
				v = "v0" // runs and repeats
			}
			c.Append(v)
			want = append(want, v)
		}
		var buf proto.Buffer
		c.EncodeState(&buf)
		c.EncodeColumn(&buf)
		ref := proto.NewLowCardinality[string](new(proto.ColStr))
		r := proto.NewReader(bytes.NewReader(buf.Buf))
		if err := ref.DecodeState(r); err != nil {
			t.Fatal(err)
		}
		if err := ref.DecodeColumn(r, len(want)); err != nil {
			t.Fatalf("%d distinct: %v", distinct, err)
		}
		if !slices.Equal(ref.Values, want) {
			t.Fatalf("%d distinct: decoded values differ", distinct)
		}
		c.Reset()
		if c.Rows() != 0 {
			t.Fatal("reset kept rows")
		}
	}
}
