// Package storage keeps Meridian's history in ClickHouse: one schema (versioned SQL
// migrations embedded in the binary), one SQL dialect, and two drivers behind Store — the
// embedded engine (chDB, the default) and a ClickHouse server or cluster (native protocol).
package storage

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/pipeline"
)

// Tables maps each record kind to its table.
var Tables = map[pipeline.Kind]string{
	pipeline.KindTunnelStat:       "tunnel_stats",
	pipeline.KindOSDStat:          "osd_stats",
	pipeline.KindCephHealth:       "ceph_health",
	pipeline.KindCephPool:         "ceph_pools",
	pipeline.KindFlow:             "flows",
	pipeline.KindFlowEdge:         "flow_edges",
	pipeline.KindProbe:            "probes",
	pipeline.KindSteeringDecision: "steering_decisions",
	pipeline.KindSteeringInputs:   "steering_inputs",
	pipeline.KindHAProxyStat:      "haproxy_stats",
	pipeline.KindVRRPState:        "vrrp_states",
	pipeline.KindVRRPTransition:   "vrrp_transitions",
	pipeline.KindAlertState:       "alert_states",
}

// driver is what differs between the embedded engine and a server.
type driver interface {
	exec(ctx context.Context, sql string) error
	query(ctx context.Context, sql, format string) ([]byte, error)
	// insert sends a Native block to table (database-qualified) once per token.
	insert(ctx context.Context, table string, b pipeline.Block) error
	close() error
}

// Store is Meridian's ClickHouse database. It is safe for concurrent use.
type Store struct {
	drv    driver
	schema schema
	log    *slog.Logger
	m      *metrics
}

var _ pipeline.Inserter = (*Store)(nil)

// Deps are what the store is given.
type Deps struct {
	Logger     *slog.Logger // nil: discard
	Registerer prometheus.Registerer
}

// New opens the store: the embedded engine when cfg.ClickHouse.DSN is empty, else the
// server driver (which connects lazily, so a server that is down fails the first
// statement, not New). Call Migrate before inserting.
func New(cfg Config, d Deps) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{schema: newSchema(cfg.Database, cfg.ClickHouse.Cluster, cfg.TTL), log: logger, m: newMetrics(d.Registerer)}
	var err error
	if cfg.ClickHouse.DSN == "" {
		s.drv, err = openEmbedded(cfg)
	} else {
		s.drv, err = openServer(cfg, s.schema)
	}
	if err != nil {
		return nil, err
	}
	// The DSN is not logged: it may hold a password.
	logger.Info("storage opened", "embedded", cfg.ClickHouse.DSN == "", "path", cfg.Path,
		"cluster", cfg.ClickHouse.Cluster, "database", cfg.Database)
	return s, nil
}

// Database is the database holding the tables.
func (s *Store) Database() string { return s.schema.DB }

// Table is the database-qualified table that queries read for a kind (the Distributed
// table on a cluster).
func (s *Store) Table(k pipeline.Kind) string { return s.schema.DB + "." + Tables[k] }

// Exec runs one statement that returns no rows. Engine errors carry ClickHouse's own text.
func (s *Store) Exec(ctx context.Context, sql string) error {
	start := time.Now()
	err := s.drv.exec(ctx, sql)
	s.m.observeQuery(start, err)
	return err
}

// Query runs one statement and returns its output in a ClickHouse format (JSONEachRow,
// TabSeparated, CSV, JSON, Native, ...). Unqualified table names resolve in Database().
func (s *Store) Query(ctx context.Context, sql, format string) ([]byte, error) {
	start := time.Now()
	out, err := s.drv.query(ctx, sql, format)
	s.m.observeQuery(start, err)
	return out, err
}

// Insert stores a Native block into its kind's table. A block inserted again with the
// same Token is stored once. A block the engine refuses for good (see insertError) comes
// back wrapped with pipeline.Permanent; any other error is worth retrying.
func (s *Store) Insert(ctx context.Context, b pipeline.Block) error {
	name, ok := Tables[b.Kind]
	if !ok {
		return pipeline.Permanent(fmt.Errorf("storage insert: unknown kind %d", b.Kind))
	}
	start := time.Now()
	err := s.drv.insert(ctx, s.schema.DB+"."+name, b)
	s.m.observeInsert(name, b, start, err)
	if err != nil {
		return insertError(fmt.Errorf("storage insert %s (%d rows): %w", name, b.Rows, err))
	}
	return nil
}

// Close releases the driver. The embedded engine itself stays up until the process exits
// (chDB boots once per process), so a later New on the same path works.
func (s *Store) Close() error { return s.drv.close() }

// insertSettings make a retried block (same token) land once, also in the rollups fed by
// materialized views. A column the table lacks is an error (a block of the wrong kind, a
// schema mismatch), never silently dropped; columns the block lacks take their defaults.
func insertSettings(token string) map[string]string {
	set := map[string]string{"input_format_skip_unknown_fields": "0"}
	if token != "" {
		set["insert_deduplicate"] = "1"
		set["insert_deduplication_token"] = token
		set["deduplicate_blocks_in_dependent_materialized_views"] = "1"
	}
	return set
}

// dbFor is the session database for sql: statements that create or drop the database
// run from "default", since it may not exist.
func dbFor(sql, database string) string {
	s := strings.ToUpper(strings.TrimSpace(sql))
	if strings.HasPrefix(s, "CREATE DATABASE") || strings.HasPrefix(s, "DROP DATABASE") {
		return "default"
	}
	return database
}

type metrics struct {
	inserts       *prometheus.CounterVec
	rows          *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	insertSeconds *prometheus.HistogramVec
	queries       *prometheus.CounterVec
	querySeconds  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		inserts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_storage_inserts_total", Help: "Native block inserts, by table and result (ok, error).",
		}, []string{"table", "result"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_storage_inserted_rows_total", Help: "Rows in successfully inserted blocks, by table.",
		}, []string{"table"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_storage_inserted_bytes_total", Help: "Native bytes of successfully inserted blocks, by table.",
		}, []string{"table"}),
		insertSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meridian_storage_insert_duration_seconds", Help: "Time to insert one block, by table.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"table"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_storage_queries_total", Help: "SQL statements run (queries and DDL), by result (ok, error).",
		}, []string{"result"}),
		querySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meridian_storage_query_duration_seconds", Help: "Time to run one SQL statement.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.inserts, m.rows, m.bytes, m.insertSeconds, m.queries, m.querySeconds)
	}
	return m
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func (m *metrics) observeInsert(table string, b pipeline.Block, start time.Time, err error) {
	m.inserts.WithLabelValues(table, result(err)).Inc()
	m.insertSeconds.WithLabelValues(table).Observe(time.Since(start).Seconds())
	if err == nil {
		m.rows.WithLabelValues(table).Add(float64(b.Rows))
		m.bytes.WithLabelValues(table).Add(float64(len(b.Native)))
	}
}

func (m *metrics) observeQuery(start time.Time, err error) {
	m.queries.WithLabelValues(result(err)).Inc()
	m.querySeconds.Observe(time.Since(start).Seconds())
}
