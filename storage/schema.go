package storage

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one versioned SQL file, migrations/NNN_name.sql.
type migration struct {
	version int
	name    string
	src     string
}

func migrations() ([]migration, error) {
	files, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	var out []migration
	for _, f := range files {
		base := strings.TrimSuffix(path.Base(f), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must be NNN_name.sql", f)
		}
		src, err := migrationFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: name, src: string(src)})
	}
	return out, nil
}

// schema renders the migrations for one database, single node or cluster.
type schema struct {
	DB        string
	Cluster   string
	OnCluster string // " ON CLUSTER name" or ""
	ttl       TTLs
}

func newSchema(db, cluster string, ttl TTLs) schema {
	s := schema{DB: db, Cluster: cluster, ttl: ttl}
	if cluster != "" {
		s.OnCluster = "ON CLUSTER " + cluster
	}
	return s
}

// local is the name of the table that holds the data: the table itself on a single
// node, NAME_local under a Distributed NAME on a cluster.
func (s schema) local(name string) string {
	if s.Cluster != "" {
		return name + "_local"
	}
	return name
}

func (s schema) funcs() template.FuncMap {
	return template.FuncMap{
		"table": func(name string) string { return s.DB + "." + s.local(name) },
		"engine": func(engine, name string) string {
			if s.Cluster == "" {
				return engine
			}
			return "Replicated" + engine + "('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
		},
		"ttl":   func(table string) string { return "TTL " + s.ttlExpr(table, "time") },
		"ttlOn": func(table, col string) string { return "TTL " + s.ttlExpr(table, col) },
		// Replicated tables deduplicate inserts by default; plain MergeTree only with a window.
		"settings": func() string {
			if s.Cluster != "" {
				return ""
			}
			return fmt.Sprintf("SETTINGS non_replicated_deduplication_window = %d", DedupWindow)
		},
		"distributed": func(name string) string {
			if s.Cluster == "" {
				return ""
			}
			return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s %s AS %s.%s ENGINE = Distributed(%s, %s, %s, rand());",
				s.DB, name, s.OnCluster, s.DB, s.local(name), s.Cluster, s.DB, s.local(name))
		},
	}
}

// DedupWindow is how many recent blocks of each table the embedded engine remembers to
// drop a retried one. One pipeline writer per kind retries a block before inserting the
// next, so the retry is the latest block of its table (and of its rollups): a small
// window suffices. The engine holds each remembered block in memory (about 200 B on chDB
// 26.7): 10,000 held some 2 MB per table, filling for hours at a block a second.
const DedupWindow = 100

// ttlExpr is written the way ClickHouse prints it back in system.tables.engine_full, so
// that a changed TTL can be detected and applied.
func (s schema) ttlExpr(table, col string) string {
	d := s.ttl.get(table)
	conv := col
	if col == "time" {
		conv = "toDateTime(time)"
	}
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%s + toIntervalDay(%d)", conv, d/(24*time.Hour))
	}
	return fmt.Sprintf("%s + toIntervalHour(%d)", conv, (d+time.Hour-1)/time.Hour)
}

// statements renders a migration and splits it into single statements.
func (s schema) statements(m migration) ([]string, error) {
	t, err := template.New(m.name).Funcs(s.funcs()).Option("missingkey=error").Parse(m.src)
	if err != nil {
		return nil, fmt.Errorf("migration %03d_%s: %w", m.version, m.name, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, s); err != nil {
		return nil, fmt.Errorf("migration %03d_%s: %w", m.version, m.name, err)
	}
	return splitSQL(buf.String()), nil
}

// splitSQL splits on semicolons that end a line; comment-only chunks are dropped.
func splitSQL(src string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		stmt := strings.TrimSpace(cur.String())
		cur.Reset()
		var code []string
		for _, l := range strings.Split(stmt, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--") {
				code = append(code, l)
			}
		}
		if len(code) > 0 {
			out = append(out, strings.Join(code, "\n"))
		}
	}
	for _, line := range strings.SplitAfter(src, "\n") {
		trimmed := strings.TrimRight(line, " \t\r\n")
		if strings.HasSuffix(trimmed, ";") {
			cur.WriteString(strings.TrimSuffix(trimmed, ";"))
			flush()
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return out
}

// DDL returns every statement Migrate would run on an empty database, in order: the
// database, the migrations table and each migration. Useful to review cluster DDL.
func (s *Store) DDL() ([]string, error) {
	out := s.bootstrap()
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		stmts, err := s.schema.statements(m)
		if err != nil {
			return nil, err
		}
		out = append(out, stmts...)
	}
	return out, nil
}

func (s *Store) bootstrap() []string {
	sc := s.schema
	engine := "ReplacingMergeTree"
	if sc.Cluster != "" {
		// Replicated to every node (no {shard} in the path): any node can tell what ran.
		engine = "ReplicatedReplacingMergeTree('/clickhouse/tables/{database}/schema_migrations', '{replica}')"
	}
	return []string{
		fmt.Sprintf("CREATE DATABASE IF NOT EXISTS %s %s", sc.DB, sc.OnCluster),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.schema_migrations %s
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = %s
ORDER BY version`, sc.DB, sc.OnCluster, engine),
	}
}

// Migrate creates the database and applies the migrations that have not run yet, then
// brings each table's TTL to the configured one. Running it again is harmless: every
// statement is idempotent and applied versions are skipped.
func (s *Store) Migrate(ctx context.Context) error { return s.migrate(ctx, math.MaxInt) }

// migrate applies the migrations up to version upTo (a test's older schema).
func (s *Store) migrate(ctx context.Context, upTo int) error {
	for _, stmt := range s.bootstrap() {
		if err := s.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("storage migrate: %w", err)
		}
	}
	applied, err := s.appliedVersions(ctx)
	if err != nil {
		return err
	}
	ms, err := migrations()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if applied[m.version] || m.version > upTo {
			continue
		}
		stmts, err := s.schema.statements(m)
		if err != nil {
			return err
		}
		for _, stmt := range stmts {
			if err := s.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("storage migrate %03d_%s: %w", m.version, m.name, err)
			}
		}
		rec := fmt.Sprintf("INSERT INTO %s.schema_migrations (version, name, applied_at) VALUES (%d, %s, now64(3))",
			s.schema.DB, m.version, quote(m.name))
		if err := s.Exec(ctx, rec); err != nil {
			return fmt.Errorf("storage migrate %03d_%s: record: %w", m.version, m.name, err)
		}
		s.log.Info("storage migration applied", "version", m.version, "name", m.name, "database", s.schema.DB)
	}
	engines, err := s.tableEngines(ctx)
	if err != nil {
		return err
	}
	if err := s.applyTTLs(ctx, engines); err != nil {
		return err
	}
	return s.applyDedupWindow(ctx, engines)
}

func (s *Store) appliedVersions(ctx context.Context) (map[int]bool, error) {
	out, err := s.Query(ctx, fmt.Sprintf("SELECT DISTINCT version FROM %s.schema_migrations", s.schema.DB), "TabSeparated")
	if err != nil {
		return nil, fmt.Errorf("storage migrate: read applied: %w", err)
	}
	applied := map[int]bool{}
	for _, l := range strings.Fields(string(out)) {
		v, err := strconv.Atoi(l)
		if err != nil {
			return nil, fmt.Errorf("storage migrate: applied version %q: %w", l, err)
		}
		applied[v] = true
	}
	return applied, nil
}

// tableEngines is each table's engine_full, by table name.
func (s *Store) tableEngines(ctx context.Context) (map[string]string, error) {
	out, err := s.Query(ctx, fmt.Sprintf("SELECT name, engine_full FROM system.tables WHERE database = %s", quote(s.schema.DB)), "TabSeparated")
	if err != nil {
		return nil, fmt.Errorf("storage migrate: tables: %w", err)
	}
	engines := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if name, engine, ok := strings.Cut(l, "\t"); ok {
			engines[name] = engine
		}
	}
	return engines, nil
}

// dedupWindowSetting finds a table's deduplication window in its engine_full.
var dedupWindowSetting = regexp.MustCompile(`non_replicated_deduplication_window = (\d+)`)

// applyDedupWindow brings the window of tables made by an older Meridian (10,000) to
// DedupWindow.
func (s *Store) applyDedupWindow(ctx context.Context, engines map[string]string) error {
	for _, name := range slices.Sorted(maps.Keys(engines)) {
		m := dedupWindowSetting.FindStringSubmatch(engines[name])
		if m == nil || m[1] == strconv.Itoa(DedupWindow) {
			continue
		}
		stmt := fmt.Sprintf("ALTER TABLE %s.%s MODIFY SETTING non_replicated_deduplication_window = %d", s.schema.DB, name, DedupWindow)
		if err := s.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("storage deduplication window %s: %w", name, err)
		}
		s.log.Info("storage deduplication window changed", "table", name, "from", m[1], "to", DedupWindow)
	}
	return nil
}

// applyTTLs alters tables whose TTL differs from the configuration.
func (s *Store) applyTTLs(ctx context.Context, engines map[string]string) error {
	for _, table := range TTLTables {
		local := s.schema.local(table)
		col := "time"
		if strings.HasSuffix(table, "_1m") {
			col = "minute"
		}
		want := s.schema.ttlExpr(table, col)
		engine, ok := engines[local]
		if !ok || strings.Contains(engine, "TTL "+want) {
			continue
		}
		stmt := fmt.Sprintf("ALTER TABLE %s.%s %s MODIFY TTL %s", s.schema.DB, local, s.schema.OnCluster, want)
		if err := s.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("storage ttl %s: %w", table, err)
		}
		s.log.Info("storage ttl changed", "table", table, "ttl", want)
	}
	return nil
}

// quote renders s as a ClickHouse string literal.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}
