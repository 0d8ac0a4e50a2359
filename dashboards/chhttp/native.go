package chhttp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	chproto "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

// nativeForRevision re-encodes Native output for a client protocol revision.
//
// The embedded engine writes Native as for revision 0 (what ClickHouse's HTTP interface
// sends when the client names no client_protocol_version): bare blocks. A client that
// names a revision, as clickhouse-go always does, reads each block with a block-info
// header and, from revision 54454, a custom-serialization flag per column. The blocks are
// decoded and encoded again with clickhouse-go's own column codecs, the same code the
// client reads them with.
func nativeForRevision(native []byte, revision uint64) ([]byte, error) {
	if revision == 0 {
		return native, nil
	}
	r := chproto.NewReader(bytes.NewReader(native))
	out := new(chproto.Buffer)
	for {
		block := proto.Block{ServerContext: &column.ServerContext{Timezone: time.UTC}}
		if err := block.Decode(r, 0); err != nil {
			if errors.Is(err, io.EOF) {
				return out.Buf, nil
			}
			return nil, fmt.Errorf("native block: %w", err)
		}
		if err := block.EncodeHeader(out, revision); err != nil {
			return nil, err
		}
		rows := block.Rows()
		for i, c := range block.Columns {
			// ClickHouse's NativeWriter writes no column data (not even a state prefix)
			// for an empty block, and readers skip it; do the same.
			if rows == 0 {
				out.PutString(c.Name())
				out.PutString(string(c.Type()))
				if revision >= proto.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION {
					out.PutBool(false)
				}
				continue
			}
			if err := block.EncodeColumn(out, revision, i); err != nil {
				return nil, err
			}
		}
	}
}
