package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/ClickHouse/ch-go/proto"
)

// lowCard is a LowCardinality(String) column that builds its dictionary as values are
// appended, skipping the lookup for a repeat of the previous value. Labels repeat in long
// runs within a batch (collector, site, namespace, verdict), so most appends cost a
// string compare instead of a map lookup. It writes the same bytes as ch-go's
// ColLowCardinality, which decodes them (and is what decoding uses here).
type lowCard struct {
	dict    map[string]uint32
	index   proto.ColStr
	keys    []uint32
	last    string
	lastKey uint32
	any     bool
}

var _ proto.ColumnOf[string] = (*lowCard)(nil)

// LowCardinality serialization constants (ClickHouse's SerializationLowCardinality).
const (
	lcSharedDictionariesWithAdditionalKeys = 1
	lcHasAdditionalKeys                    = 1 << 9
	lcNeedUpdateDictionary                 = 1 << 10
)

func newLowCard() *lowCard { return &lowCard{dict: map[string]uint32{}} }

func (c *lowCard) Append(v string) {
	if c.any && v == c.last {
		c.keys = append(c.keys, c.lastKey)
		return
	}
	k, ok := c.dict[v]
	if !ok {
		k = uint32(c.index.Rows())
		c.index.Append(v)
		c.dict[v] = k
	}
	c.keys = append(c.keys, k)
	c.last, c.lastKey, c.any = v, k, true
}

func (c *lowCard) AppendArr(vs []string) {
	for _, v := range vs {
		c.Append(v)
	}
}

func (c *lowCard) Row(i int) string { return c.index.Row(int(c.keys[i])) }
func (c *lowCard) Rows() int        { return len(c.keys) }
func (c *lowCard) Type() proto.ColumnType {
	return proto.ColumnTypeLowCardinality.Sub(proto.ColumnTypeString)
}
func (c *lowCard) EncodeState(b *proto.Buffer) { b.PutInt64(lcSharedDictionariesWithAdditionalKeys) }

func (c *lowCard) Reset() {
	clear(c.dict)
	c.index.Reset()
	c.keys = c.keys[:0]
	c.last, c.any = "", false
}

func (c *lowCard) EncodeColumn(b *proto.Buffer) {
	if len(c.keys) == 0 {
		return
	}
	n := c.index.Rows()
	key, width := proto.KeyUInt32, 4
	switch {
	case n <= 1<<8:
		key, width = proto.KeyUInt8, 1
	case n <= 1<<16:
		key, width = proto.KeyUInt16, 2
	}
	b.PutInt64(lcHasAdditionalKeys | lcNeedUpdateDictionary | int64(key))
	b.PutInt64(int64(n))
	c.index.EncodeColumn(b)
	b.PutInt64(int64(len(c.keys)))
	start := len(b.Buf)
	b.Buf = append(b.Buf, make([]byte, width*len(c.keys))...)
	out := b.Buf[start:]
	switch width {
	case 1:
		for i, k := range c.keys {
			out[i] = byte(k)
		}
	case 2:
		for i, k := range c.keys {
			binary.LittleEndian.PutUint16(out[2*i:], uint16(k))
		}
	default:
		for i, k := range c.keys {
			binary.LittleEndian.PutUint32(out[4*i:], k)
		}
	}
}

func (c *lowCard) WriteColumn(w *proto.Writer) {
	w.ChainBuffer(c.EncodeColumn)
}

// DecodeState and DecodeColumn delegate to ch-go's column, the reference reader.
func (c *lowCard) DecodeState(r *proto.Reader) error {
	v, err := r.Int64()
	if err != nil {
		return err
	}
	if v != lcSharedDictionariesWithAdditionalKeys {
		return fmt.Errorf("low cardinality key version %d, want %d", v, lcSharedDictionariesWithAdditionalKeys)
	}
	return nil
}

func (c *lowCard) DecodeColumn(r *proto.Reader, rows int) error {
	ref := proto.NewLowCardinality[string](new(proto.ColStr))
	if err := ref.DecodeColumn(r, rows); err != nil {
		return err
	}
	c.AppendArr(ref.Values)
	return nil
}
