package storage

import (
	"context"

	"github.com/ClickHouse/ch-go/proto"

	"github.com/meridianhq/meridian/pipeline"
)

// NewColumns returns fresh columns of kind's table (what the encoder writes), for the
// test server to decode client blocks into.
func NewColumns(kind pipeline.Kind) proto.Input { return columnSets[kind]().cols().input }

// MigrateTo applies the migrations up to version: the schema an older Meridian left.
func (s *Store) MigrateTo(ctx context.Context, version int) error { return s.migrate(ctx, version) }

// MigrationCount is how many migrations the package embeds: what a migrated database's
// schema_migrations holds.
func MigrationCount() int {
	ms, err := migrations()
	if err != nil {
		panic(err)
	}
	return len(ms)
}
