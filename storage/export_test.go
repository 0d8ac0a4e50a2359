package storage

import (
	"github.com/ClickHouse/ch-go/proto"

	"github.com/meridianhq/meridian/pipeline"
)

// NewColumns returns fresh columns of kind's table (what the encoder writes), for the
// test server to decode client blocks into.
func NewColumns(kind pipeline.Kind) proto.Input { return columnSets[kind]().cols().input }
