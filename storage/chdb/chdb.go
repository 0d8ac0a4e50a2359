// Package chdb runs ClickHouse embedded in the process: it loads libchdb.so (ClickHouse
// as a library, from the npm package @chdb/lib-linux-x64-gnu) at run time with purego,
// without cgo, and exposes SQL queries and streaming Native inserts.
//
// A Go panic or fault still ends the process with Go's stack trace: Open keeps the Go
// runtime's signal handlers in place of the engine's (see keepGoSignalHandlers).
//
// The engine is process-wide: it boots once with one data path and stays up until the
// process exits (chDB cannot shut down and reboot a MergeTree engine cleanly), so Open is
// idempotent per path and refuses a second path.
package chdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Version is the chDB release Meridian is built and tested against (the Makefile pins it).
const Version = "26.7.3-stable.1"

// EnvLib names the environment variable that points at libchdb.so.
const EnvLib = "MERIDIAN_CHDB_LIB"

// DefaultLibPath is where `make chdb` unpacks the library.
func DefaultLibPath() string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "~"
	}
	return filepath.Join(home, ".cache", "meridian", "chdb-"+Version, "package", "libchdb.so")
}

// LibPath resolves the library: the configured path, else $MERIDIAN_CHDB_LIB, else
// DefaultLibPath.
func LibPath(configured string) string {
	if configured != "" {
		return configured
	}
	if p := os.Getenv(EnvLib); p != "" {
		return p
	}
	return DefaultLibPath()
}

// Error is an error reported by the engine; Msg is ClickHouse's own text (with its
// error code name, e.g. "Code: 60. DB::Exception: ... (UNKNOWN_TABLE)") and Code the
// ClickHouse error code it starts with (0 when the engine gave none, as when this package
// itself gets no result from the engine).
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return "clickhouse: " + e.Msg }

// engineError keeps the engine's text and the error code it starts with.
func engineError(msg string) *Error {
	e := &Error{Msg: msg}
	if rest, ok := strings.CutPrefix(msg, "Code: "); ok {
		if n, _, ok := strings.Cut(rest, "."); ok {
			e.Code, _ = strconv.Atoi(n)
		}
	}
	return e
}

// poolSize bounds how many statements run at once. A chDB connection runs one statement
// at a time; several connections share the one engine, so queries (dashboards) and
// inserts (the writer) proceed in parallel.
const poolSize = 4

// DB is the process-wide embedded engine.
type DB struct {
	path  string
	conns chan *conn // idle connections
}

// conn is one chDB connection and the database its session currently uses.
type conn struct {
	h  uintptr // chdb_connection
	db string
}

var (
	openMu sync.Mutex
	opened *DB
	api    *lib
)

// Limits bound the engine's memory. ClickHouse's defaults are sized for a server that owns
// its machine (5 GiB of mark cache, 5 GiB of primary index cache, 90 % of RAM in all); an
// engine embedded next to Meridian's own heap gets explicit, small ceilings instead.
type Limits struct {
	MaxMemory int64 // bytes: max_server_memory_usage, queries past it fail (0: the engine's default)
}

// DefaultLimits is what Open uses.
var DefaultLimits = Limits{MaxMemory: 1 << 30}

// args are the engine's server settings for l, as clickhouse-local takes them.
func (l Limits) args() []string {
	const mib = 1 << 20
	a := []string{
		fmt.Sprintf("--mark_cache_size=%d", 64*mib),
		fmt.Sprintf("--index_mark_cache_size=%d", 16*mib),
		fmt.Sprintf("--primary_index_cache_size=%d", 64*mib),
		"--uncompressed_cache_size=0",
		"--index_uncompressed_cache_size=0",
		fmt.Sprintf("--compiled_expression_cache_size=%d", 32*mib),
		fmt.Sprintf("--query_condition_cache_size=%d", 16*mib),
	}
	if l.MaxMemory > 0 {
		a = append(a, fmt.Sprintf("--max_server_memory_usage=%d", l.MaxMemory))
	}
	return a
}

// Open boots the engine with data under path and DefaultLimits, loading the library at
// libPath (see LibPath). A second Open with the same path returns the same DB; with
// another path it fails, since one process holds one engine.
func Open(libPath, path string) (*DB, error) { return OpenLimited(libPath, path, DefaultLimits) }

// OpenLimited is Open with the engine's memory bounded by lim (applied when this call
// boots the engine).
func OpenLimited(libPath, path string, lim Limits) (*DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("chdb: data path %q: %w", path, err)
	}
	openMu.Lock()
	defer openMu.Unlock()
	if opened != nil {
		if opened.path != abs {
			return nil, fmt.Errorf("chdb: the embedded engine is already open at %s in this process; one process holds one engine, cannot open %s as well", opened.path, abs)
		}
		return opened, nil
	}
	if api == nil {
		l, err := load(libPath)
		if err != nil {
			return nil, err
		}
		api = l
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("chdb: data path: %w", err)
	}
	// Before the engine boots (in the first chdb_connect), so that its handlers are
	// never the ones a Go fault meets.
	if err := api.keepGoSignalHandlers(); err != nil {
		return nil, err
	}
	db := &DB{path: abs, conns: make(chan *conn, poolSize)}
	for i := 0; i < poolSize; i++ {
		h, err := api.connect(abs, lim.args())
		if err != nil {
			return nil, err
		}
		db.conns <- &conn{h: h}
	}
	opened = db
	return db, nil
}

// OpenPath is the data directory of the engine open in this process, "" when none is.
func OpenPath() string {
	openMu.Lock()
	defer openMu.Unlock()
	if opened == nil {
		return ""
	}
	return opened.path
}

// Path is the engine's absolute data directory.
func (db *DB) Path() string { return db.path }

// acquire takes an idle connection and points its session at database ("" leaves it).
func (db *DB) acquire(ctx context.Context, database string) (*conn, error) {
	var c *conn
	select {
	case c = <-db.conns:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if database != "" && c.db != database {
		if _, err := api.query(c.h, "USE "+database, "TabSeparated"); err != nil {
			db.release(c)
			return nil, err
		}
		c.db = database
	}
	return c, nil
}

func (db *DB) release(c *conn) { db.conns <- c }

// Query runs one SQL statement in database ("" for the session's current one) and
// returns its output in the given ClickHouse format (JSONEachRow, TabSeparated, Native,
// ...); format "" means TabSeparated. Errors from the engine are *Error.
func (db *DB) Query(ctx context.Context, database, sql, format string) ([]byte, error) {
	c, err := db.acquire(ctx, database)
	if err != nil {
		return nil, err
	}
	defer db.release(c)
	if format == "" {
		format = "TabSeparated"
	}
	return api.query(c.h, sql, format)
}

// Insert runs query (an INSERT without a FORMAT clause, e.g. "INSERT INTO db.t") in
// database and streams data in the given input format to it. It returns the rows written,
// counting those that materialized views wrote too.
func (db *DB) Insert(ctx context.Context, database, query, format string, data []byte) (uint64, error) {
	c, err := db.acquire(ctx, database)
	if err != nil {
		return 0, err
	}
	defer db.release(c)
	return api.insert(c.h, query, format, data)
}

// lib holds the C API of libchdb.so.
type lib struct {
	connect_      func(argc int32, argv **byte) *uintptr
	queryN        func(conn uintptr, q unsafe.Pointer, qlen uintptr, f string, flen uintptr) uintptr
	resultBuffer  func(r uintptr) *byte
	resultLength  func(r uintptr) uintptr
	resultError   func(r uintptr) string
	resultRowsW   func(r uintptr) uint64
	destroyResult func(r uintptr)
	streamInsert  func(conn uintptr, q string, f string) uintptr
	streamAppend  func(s uintptr, data unsafe.Pointer, n uintptr) int32
	streamDone    func(s uintptr) uintptr
	streamError   func(s uintptr) string
	destroyStream func(s uintptr)

	setSignalHandlersEnabled func(enabled int32)
}

func load(path string) (*lib, error) {
	if _, err := os.Stat(path); err != nil {
		dir := "~/.cache/meridian/chdb-" + Version
		return nil, fmt.Errorf("chdb: embedded ClickHouse library not found at %s (set -storage.chdb-lib or $%s). "+
			"Get it with `make chdb`, or by hand: `npm pack @chdb/lib-linux-x64-gnu@%s && mkdir -p %s && "+
			"tar -xzf chdb-lib-linux-x64-gnu-%s.tgz -C %s` (the library is %s/package/libchdb.so)",
			path, EnvLib, Version, dir, Version, dir, dir)
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("chdb: load %s: %w", path, err)
	}
	l := &lib{}
	for name, fn := range map[string]any{
		"chdb_connect":                     &l.connect_,
		"chdb_query_n":                     &l.queryN,
		"chdb_result_buffer":               &l.resultBuffer,
		"chdb_result_length":               &l.resultLength,
		"chdb_result_error":                &l.resultError,
		"chdb_result_rows_written":         &l.resultRowsW,
		"chdb_destroy_query_result":        &l.destroyResult,
		"chdb_stream_insert":               &l.streamInsert,
		"chdb_stream_append":               &l.streamAppend,
		"chdb_stream_done":                 &l.streamDone,
		"chdb_stream_insert_error":         &l.streamError,
		"chdb_destroy_insert_stream":       &l.destroyStream,
		"chdb_set_signal_handlers_enabled": &l.setSignalHandlersEnabled,
	} {
		sym, err := purego.Dlsym(h, name)
		if err != nil {
			return nil, fmt.Errorf("chdb: %s lacks %s (need chDB %s): %w", path, name, Version, err)
		}
		purego.RegisterFunc(fn, sym)
	}
	return l, nil
}

func cstr(s string) *byte {
	b := append([]byte(s), 0)
	return &b[0]
}

func (l *lib) connect(path string, settings []string) (uintptr, error) {
	args := []*byte{cstr("meridian"), cstr("--path=" + path)}
	for _, s := range settings {
		args = append(args, cstr(s))
	}
	pp := l.connect_(int32(len(args)), &args[0])
	runtime.KeepAlive(args)
	if pp == nil {
		return 0, fmt.Errorf("chdb: cannot open the embedded engine at %s (is another process using it, or is it unwritable?)", path)
	}
	// chdb_connect returns a pointer to the connection handle.
	return *pp, nil
}

func (l *lib) query(c uintptr, sql, format string) ([]byte, error) {
	q := []byte(sql)
	if len(q) == 0 {
		return nil, &Error{Msg: "empty query"}
	}
	r := l.queryN(c, unsafe.Pointer(&q[0]), uintptr(len(q)), format, uintptr(len(format)))
	runtime.KeepAlive(q)
	if r == 0 {
		return nil, &Error{Msg: "no result from engine"}
	}
	defer l.destroyResult(r)
	if msg := l.resultError(r); msg != "" {
		return nil, engineError(msg)
	}
	n := l.resultLength(r)
	if n == 0 {
		return nil, nil
	}
	out := make([]byte, n)
	copy(out, unsafe.Slice(l.resultBuffer(r), n))
	return out, nil
}

func (l *lib) insert(c uintptr, query, format string, data []byte) (uint64, error) {
	s := l.streamInsert(c, query, format)
	if s == 0 {
		return 0, &Error{Msg: "no insert stream from engine"}
	}
	defer l.destroyStream(s)
	if msg := l.streamError(s); msg != "" {
		return 0, engineError(msg)
	}
	if len(data) > 0 {
		if l.streamAppend(s, unsafe.Pointer(&data[0]), uintptr(len(data))) != 0 {
			msg := l.streamError(s)
			if msg == "" {
				msg = "append to insert stream failed"
			}
			return 0, engineError(msg)
		}
		runtime.KeepAlive(data)
	}
	r := l.streamDone(s)
	if r == 0 {
		if msg := l.streamError(s); msg != "" {
			return 0, engineError(msg)
		}
		return 0, &Error{Msg: "no result from insert"}
	}
	defer l.destroyResult(r)
	if msg := l.resultError(r); msg != "" {
		return 0, engineError(msg)
	}
	return l.resultRowsW(r), nil
}

// IsEngineError reports whether err carries an engine error.
func IsEngineError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
