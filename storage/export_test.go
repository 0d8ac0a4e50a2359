package storage

import (
	"github.com/ClickHouse/ch-go/proto"

	"github.com/meridianhq/meridian/pipeline"
)

// NewColumns returns fresh columns of kind's table (what the encoder writes), for the
// test server to decode client blocks into.
func NewColumns(kind pipeline.Kind) proto.Input { return columnSets[kind]().cols().input }

// MigrationCount is how many migrations the package embeds: what a migrated database's
// schema_migrations holds.
func MigrationCount() int {
	ms, err := migrations()
	if err != nil {
		panic(err)
	}
	return len(ms)
}
