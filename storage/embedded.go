package storage

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage/chdb"
)

// embedded runs on the process-wide chDB engine; database is selected per statement.
type embedded struct {
	db       *chdb.DB
	database string
}

func openEmbedded(cfg Config) (*embedded, error) {
	db, err := chdb.OpenLimited(chdb.LibPath(cfg.ChdbLib), cfg.Path, chdb.Limits{MaxMemory: cfg.ChdbMaxMemory})
	if err != nil {
		return nil, err
	}
	return &embedded{db: db, database: cfg.Database}, nil
}

func (e *embedded) exec(ctx context.Context, sql string) error {
	_, err := e.db.Query(ctx, dbFor(sql, e.database), sql, "")
	return err
}

func (e *embedded) query(ctx context.Context, sql, format string) ([]byte, error) {
	return e.db.Query(ctx, dbFor(sql, e.database), sql, format)
}

func (e *embedded) insert(ctx context.Context, table string, b pipeline.Block) error {
	q := "INSERT INTO " + table + settingsClause(insertSettings(b.Token))
	_, err := e.db.Insert(ctx, e.database, q, "Native", b.Native)
	return err
}

func (e *embedded) close() error { return nil }

// settingsClause renders " SETTINGS k = 'v', ..." in a stable order.
func settingsClause(set map[string]string) string {
	if len(set) == 0 {
		return ""
	}
	var sb strings.Builder
	sb.WriteString(" SETTINGS ")
	for i, k := range slices.Sorted(maps.Keys(set)) {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(k + " = " + quote(set[k]))
	}
	return sb.String()
}
