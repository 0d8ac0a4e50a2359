// Package chhttp serves the embedded ClickHouse engine over the part of ClickHouse's HTTP
// interface that Grafana's ClickHouse plugin and clickhouse-go (HTTP protocol) use, so
// Grafana works against Meridian's default embedded storage, where there is no ClickHouse
// server to point it at. It is read-only, password-protected and sandboxed: no function
// reads outside the database, and every query runs under memory, read, result and time
// limits the client can only narrow.
package chhttp

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/ch-go/compress"
	"github.com/andybalholm/brotli"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridianhq/meridian/internal/secret"
)

// PasswordEnv is the environment variable holding the password when no file is set.
const PasswordEnv = "MERIDIAN_CLICKHOUSE_HTTP_PASSWORD"

// Querier runs one SQL statement on the engine and returns its output in a ClickHouse
// format (storage.Store satisfies it). Engine errors carry ClickHouse's text
// ("Code: 60. DB::Exception: ...").
type Querier interface {
	Query(ctx context.Context, sql, format string) ([]byte, error)
}

// Config is the endpoint's configuration.
type Config struct {
	User             string        `yaml:"user"`
	PasswordFile     string        `yaml:"password_file" secret:"MERIDIAN_CLICKHOUSE_HTTP_PASSWORD"`
	MaxExecutionTime time.Duration `yaml:"max_execution_time"`
	MaxResultBytes   int64         `yaml:"max_result_bytes"`
	MaxResultRows    int64         `yaml:"max_result_rows"`
	// The engine is shared with the pipeline's inserts (and GeoDNS lives in the same
	// process): one query must not take the process's memory or read without end.
	MaxMemoryUsage int64 `yaml:"max_memory_usage"`
	MaxRowsToRead  int64 `yaml:"max_rows_to_read"`
	MaxBytesToRead int64 `yaml:"max_bytes_to_read"`
	// MaxConcurrentQueries bounds the engine connections dashboards may hold at once, so
	// a wall of panels cannot starve the pipeline's inserts (they share the engine).
	MaxConcurrentQueries int `yaml:"max_concurrent_queries"`
}

// RegisterFlags registers the endpoint's flags.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.User, "clickhouse-http.user", "grafana", "User name the ClickHouse HTTP endpoint accepts.")
	f.StringVar(&c.PasswordFile, "clickhouse-http.password-file", "", "File holding the ClickHouse HTTP endpoint's password (default: env "+PasswordEnv+").")
	f.DurationVar(&c.MaxExecutionTime, "clickhouse-http.max-execution-time", time.Minute, "Longest a query may run; a client's max_execution_time may only lower it.")
	f.Int64Var(&c.MaxResultBytes, "clickhouse-http.max-result-bytes", 256<<20, "Largest result a query may return, in bytes.")
	f.Int64Var(&c.MaxResultRows, "clickhouse-http.max-result-rows", 10_000_000, "Most rows a query may return.")
	f.Int64Var(&c.MaxMemoryUsage, "clickhouse-http.max-memory-usage", 1<<30, "Most memory one query may use in the engine, in bytes.")
	f.Int64Var(&c.MaxRowsToRead, "clickhouse-http.max-rows-to-read", 2_000_000_000, "Most rows one query may read.")
	f.Int64Var(&c.MaxBytesToRead, "clickhouse-http.max-bytes-to-read", 100<<30, "Most uncompressed bytes one query may read.")
	f.IntVar(&c.MaxConcurrentQueries, "clickhouse-http.max-concurrent-queries", 2, "Queries run at once; more wait for a slot until their time limit.")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.User == "" {
		return errors.New("clickhouse_http.user: empty")
	}
	if c.MaxExecutionTime < time.Second {
		return fmt.Errorf("clickhouse_http.max_execution_time: %v is under 1s", c.MaxExecutionTime)
	}
	for _, l := range []struct {
		name string
		v    int64
	}{{"max_result_bytes", c.MaxResultBytes}, {"max_result_rows", c.MaxResultRows}, {"max_memory_usage", c.MaxMemoryUsage}, {"max_rows_to_read", c.MaxRowsToRead}, {"max_bytes_to_read", c.MaxBytesToRead}} {
		if l.v <= 0 { // 0 means no limit to the engine
			return fmt.Errorf("clickhouse_http.%s: %d is not positive", l.name, l.v)
		}
	}
	if c.MaxConcurrentQueries <= 0 {
		return fmt.Errorf("clickhouse_http.max_concurrent_queries: %d is not positive", c.MaxConcurrentQueries)
	}
	return nil
}

// Password is where the endpoint's password is: password_file, else
// $MERIDIAN_CLICKHOUSE_HTTP_PASSWORD.
func (c *Config) Password() secret.Source {
	return secret.Source{File: c.PasswordFile, Env: PasswordEnv, Field: "clickhouse_http.password_file"}
}

// maxQuerySize bounds a request's SQL (URL parameter plus body).
const maxQuerySize = 1 << 20

// Handler is the endpoint. Mount it on a prefix (e.g. /clickhouse/) without the server's
// bearer-token middleware: it authenticates as ClickHouse does, with a user and password.
type Handler struct {
	cfg      Config
	password secret.Value
	q        Querier
	slots    chan struct{} // one per query running on the engine
	log      *slog.Logger
	// tableFunctions are the engine's table functions, lower case: the sandbox refuses
	// those not known to only compute, so one a new engine adds is refused too. Read at
	// the first query: at New the store's database may not exist yet (migrations run at
	// its start).
	tfMu           sync.Mutex
	tableFunctions map[string]bool

	requests *prometheus.CounterVec
	refused  *prometheus.CounterVec
	waiting  prometheus.Gauge
	duration prometheus.Histogram
}

// Deps are what the endpoint uses besides its configuration.
type Deps struct {
	Querier    Querier // the engine the queries run on
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// New creates the endpoint. It refuses to start without a password.
func New(cfg Config, d Deps) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	q, log, reg := d.Querier, d.Logger, d.Registerer
	pw, err := secret.Read(cfg.Password())
	if err != nil {
		return nil, err
	}
	if pw.Empty() {
		return nil, fmt.Errorf("clickhouse_http: no password: set %s or -clickhouse-http.password-file", PasswordEnv)
	}
	h := &Handler{
		cfg: cfg, password: pw, q: q, log: log, slots: make(chan struct{}, cfg.MaxConcurrentQueries),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_clickhouse_http_requests_total",
			Help: "Requests to the ClickHouse HTTP endpoint, by HTTP status code.",
		}, []string{"code"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_clickhouse_http_refused_total",
			Help: "Requests the ClickHouse HTTP endpoint refused before running them, by reason (auth, readonly, sandbox, syntax, unsupported, too_large, busy).",
		}, []string{"reason"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meridian_clickhouse_http_queries_waiting",
			Help: "Queries waiting for a free slot (max_concurrent_queries) before they run.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meridian_clickhouse_http_query_duration_seconds",
			Help:    "Time the engine took to run queries from the ClickHouse HTTP endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
	}
	for _, c := range []prometheus.Collector{h.requests, h.refused, h.waiting, h.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("clickhouse_http: register metrics: %w", err)
		}
	}
	return h, nil
}

// ServeHTTP answers /ping (and /replicas_status) as ClickHouse does and runs every other
// request as a query.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/ping") || strings.HasSuffix(r.URL.Path, "/replicas_status") {
		h.requests.WithLabelValues("200").Inc()
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		io.WriteString(w, "Ok.\n")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		h.fail(w, "unsupported", exception(codeNotImplemented, "HTTP method %s is not supported", r.Method))
		return
	}
	if ex := h.authenticate(r); ex != nil {
		if ex.Code == codeRequiredPassword {
			w.Header().Set("WWW-Authenticate", `Basic realm="ClickHouse server HTTP API"`)
		}
		h.fail(w, "auth", ex)
		return
	}
	params := r.URL.Query()
	sql, ex := readQuery(r, params)
	if ex != nil {
		h.refuse(w, ex)
		return
	}
	// A first check refuses what is plainly not a read before it takes an engine slot.
	if _, ex := h.check(r.Context(), sql); ex != nil {
		h.refuse(w, ex)
		return
	}
	settings, revision, ex := h.settings(params)
	if ex != nil {
		h.fail(w, "unsupported", ex)
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.MaxExecutionTime+5*time.Second)
	defer cancel()
	h.waiting.Inc()
	select {
	case h.slots <- struct{}{}:
		h.waiting.Dec()
		defer func() { <-h.slots }()
	case <-ctx.Done():
		h.waiting.Dec()
		h.fail(w, "busy", exception(codeTooManyQueries, "Too many simultaneous queries: no free slot of %d within the time limit", cap(h.slots)))
		return
	}
	start := time.Now()
	defer func() { h.duration.Observe(time.Since(start).Seconds()) }()

	// What runs is the engine's own re-serialization of the one statement it parsed, and
	// that text is checked again: no difference between this package's lexer and
	// ClickHouse's can smuggle a second statement or a SETTINGS clause past the check.
	canon, err := h.canonical(ctx, sql)
	if err != nil {
		h.refuse(w, engineException(err))
		return
	}
	st, ex := h.check(ctx, canon)
	if ex != nil {
		h.refuse(w, ex)
		return
	}
	format := st.format
	if format == "" {
		format = params.Get("default_format")
	}
	if format == "" {
		format = "TabSeparated"
	}
	out, err := h.q.Query(ctx, st.body+"\nSETTINGS "+settings, format)
	if err == nil && strings.EqualFold(format, "Native") {
		out, err = nativeForRevision(out, revision)
	}
	if err != nil {
		ex := engineException(err)
		h.log.Debug("clickhouse http query failed", "code", ex.Code, "err", ex.Text)
		h.fail(w, "", ex)
		return
	}
	h.write(w, r, params, format, out)
}

// check parses sql as one read-only statement and applies the sandbox to it.
func (h *Handler) check(ctx context.Context, sql string) (statement, *Exception) {
	st, ex := parseStatement(sql)
	if ex != nil {
		return st, ex
	}
	tf, err := h.engineTableFunctions(ctx)
	if err != nil {
		return st, engineException(fmt.Errorf("list the engine's table functions: %w", err))
	}
	return st, sandbox(st.toks, tf)
}

// engineTableFunctions reads the engine's table functions once it can.
func (h *Handler) engineTableFunctions(ctx context.Context) (map[string]bool, error) {
	h.tfMu.Lock()
	defer h.tfMu.Unlock()
	if h.tableFunctions != nil {
		return h.tableFunctions, nil
	}
	out, err := h.q.Query(ctx, "SELECT lower(name) FROM system.table_functions", "TSVRaw")
	if err != nil {
		return nil, err
	}
	tf := map[string]bool{}
	for _, name := range strings.Fields(string(out)) {
		tf[name] = true
	}
	if len(tf) == 0 {
		return nil, errors.New("the engine lists none")
	}
	h.tableFunctions = tf
	return tf, nil
}

// canonical has the engine parse sql as exactly one statement (formatQuerySingleLine
// refuses multi-statements) and returns it re-serialized: no comments, no heredocs,
// strings in one quoting style.
func (h *Handler) canonical(ctx context.Context, sql string) (string, error) {
	lit := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(sql)
	out, err := h.q.Query(ctx, "SELECT formatQuerySingleLine('"+lit+"') SETTINGS readonly=1", "TSVRaw")
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(out), "\n"), nil
}

// refuse sends ex for a request refused before its query ran, counted by reason.
func (h *Handler) refuse(w http.ResponseWriter, ex *Exception) {
	reason := "unsupported"
	switch ex.Code {
	case codeReadonly:
		reason = "readonly"
	case codeSyntaxError:
		reason = "syntax"
	case codeQueryIsTooLarge:
		reason = "too_large"
	case codeAccessDenied:
		reason = "sandbox"
	}
	h.fail(w, reason, ex)
}

// authenticate checks the credentials the ways ClickHouse takes them in headers:
// X-ClickHouse-User and X-ClickHouse-Key, HTTP basic auth, and a bearer token (the
// password) as clickhouse-go sends for JWT auth. A password in the URL is refused, right
// or wrong: URLs end up in proxy logs, browser history and Referer headers.
func (h *Handler) authenticate(r *http.Request) *Exception {
	if r.URL.Query().Has("password") {
		return exception(codeBadArguments, "Password in the URL is refused (URLs are logged): send it in the X-ClickHouse-Key header or with HTTP basic auth")
	}
	user, pass, ok := r.Header.Get("X-ClickHouse-User"), r.Header.Get("X-ClickHouse-Key"), false
	switch {
	case user != "" || pass != "":
	case strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "):
		user, pass = h.cfg.User, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	default:
		if user, pass, ok = r.BasicAuth(); !ok {
			user = r.URL.Query().Get("user")
		}
	}
	if user == "" {
		user = "default"
	}
	if pass == "" {
		return exception(codeRequiredPassword, "%s: Authentication failed: password is required", user)
	}
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(h.cfg.User))
	passOK := subtle.ConstantTimeCompare([]byte(pass), []byte(h.password.Reveal()))
	if userOK&passOK != 1 {
		return exception(codeAuthenticationFailed, "%s: Authentication failed: password is incorrect, or there is no user with such name", user)
	}
	return nil
}

// readQuery joins the query URL parameter and the body as ClickHouse does (parameter,
// newline, body), decompressing a body sent with Content-Encoding.
func readQuery(r *http.Request, params map[string][]string) (string, *Exception) {
	q := ""
	if v := params["query"]; len(v) > 0 && v[0] != "" {
		q = v[0] + "\n"
	}
	var body io.Reader = r.Body
	switch strings.ToLower(r.Header.Get("Content-Encoding")) {
	case "":
	case "gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return "", exception(codeSyntaxError, "Cannot decompress gzip request body: %v", err)
		}
		body = zr
	case "deflate":
		zr, err := zlib.NewReader(r.Body)
		if err != nil {
			return "", exception(codeSyntaxError, "Cannot decompress deflate request body: %v", err)
		}
		body = zr
	case "br":
		body = brotli.NewReader(r.Body)
	default:
		return "", exception(codeNotImplemented, "Content-Encoding %q is not supported", r.Header.Get("Content-Encoding"))
	}
	b, err := io.ReadAll(io.LimitReader(body, maxQuerySize+1))
	if err != nil {
		return "", exception(codeSyntaxError, "Cannot read request body: %v", err)
	}
	q += string(b)
	if len(q) > maxQuerySize {
		return "", exception(codeQueryIsTooLarge, "Query is too large (%d bytes); max is %d", len(q), maxQuerySize)
	}
	return q, nil
}

// settingValue is what a setting taken from the URL may look like inside the SETTINGS clause.
var settingValue = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,64}$`)

// passedSettings are URL settings applied to the engine: limits that can only narrow a
// query and output options. Others are accepted and ignored: clients send settings
// (session_id, wait_end_of_query, ...) that mean nothing here, and none may widen the
// endpoint's limits or take more of the engine (max_threads).
var passedSettings = map[string]bool{
	"limit": true, "offset": true, "read_overflow_mode": true,
	"timeout_overflow_mode":   true,
	"date_time_output_format": true, "output_format_json_quote_64bit_integers": true,
	"output_format_json_quote_denormals": true, "output_format_decimal_trailing_zeros": true,
	"session_timezone": true, "extremes": true,
}

// settings builds the engine's SETTINGS clause for a request: the endpoint's limits, the
// client's settings that may only narrow them, no introspection, and readonly=1 last (it
// blocks most table functions that reach outside, and any later change of a setting).
// The client cannot add settings of its own: SETTINGS in the SQL is refused. It also
// returns the Native revision the client asked for.
func (h *Handler) settings(params map[string][]string) (string, uint64, *Exception) {
	maxExec := int(h.cfg.MaxExecutionTime / time.Second)
	limits := map[string]int64{
		"max_result_bytes": h.cfg.MaxResultBytes, "max_result_rows": h.cfg.MaxResultRows,
		"max_memory_usage": h.cfg.MaxMemoryUsage, "max_rows_to_read": h.cfg.MaxRowsToRead,
		"max_bytes_to_read": h.cfg.MaxBytesToRead,
	}
	var revision uint64
	var extra []string
	for name, vs := range params {
		v := vs[0]
		switch {
		case strings.HasPrefix(name, "param_"):
			return "", 0, exception(codeUnknownQueryParam, "Query parameters are not supported by this endpoint (%s); inline the value", name)
		case name == "client_protocol_version":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return "", 0, exception(codeSyntaxError, "client_protocol_version %q is not a number", v)
			}
			revision = n
		case name == "max_execution_time":
			if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 1 && int(n) < maxExec {
				maxExec = int(n)
			}
		case limits[name] > 0:
			// 0 would mean no limit to the engine: only a smaller positive value narrows.
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 && n < limits[name] {
				limits[name] = n
			}
		case passedSettings[name]:
			if !settingValue.MatchString(v) {
				return "", 0, exception(codeSyntaxError, "Setting %s has an unsupported value", name)
			}
			if _, err := strconv.ParseFloat(v, 64); err != nil {
				v = "'" + v + "'"
			}
			extra = append(extra, name+"="+v)
		}
	}
	for name, v := range limits {
		extra = append(extra, fmt.Sprintf("%s=%d", name, v))
	}
	sort.Strings(extra) // deterministic SQL, for logs and tests
	s := fmt.Sprintf("max_execution_time=%d, result_overflow_mode='throw', allow_introspection_functions=0", maxExec)
	for _, e := range extra {
		s += ", " + e
	}
	return s + ", readonly=1", revision, nil
}

// write sends a result: Content-Type for its format, ClickHouse's headers, and the body
// compressed when the client asked (HTTP compression with enable_http_compression=1, or
// ClickHouse's native block compression with compress=1).
func (h *Handler) write(w http.ResponseWriter, r *http.Request, params map[string][]string, format string, out []byte) {
	hdr := w.Header()
	hdr.Set("Content-Type", contentType(format))
	hdr.Set("X-ClickHouse-Format", format)
	hdr.Set("X-ClickHouse-Timezone", "UTC")
	qid := first(params["query_id"])
	if qid == "" {
		var b [16]byte
		rand.Read(b[:])
		qid = hex.EncodeToString(b[:])
	}
	hdr.Set("X-ClickHouse-Query-Id", qid)

	if first(params["compress"]) == "1" {
		method := compress.LZ4
		if strings.EqualFold(first(params["network_compression_method"]), "ZSTD") {
			method = compress.ZSTD
		}
		var buf bytes.Buffer
		cw := compress.NewWriter(compress.LevelZero, method)
		for chunk := range chunks(out, 1<<20) {
			if err := cw.Compress(chunk); err != nil {
				h.fail(w, "", exception(codeSTDException, "compress: %v", err))
				return
			}
			buf.Write(cw.Data)
		}
		out = buf.Bytes()
	} else if first(params["enable_http_compression"]) == "1" {
		if enc, zw := httpCompressor(r.Header.Get("Accept-Encoding")); zw != nil {
			var buf bytes.Buffer
			c := zw(&buf)
			c.Write(out)
			c.Close()
			out = buf.Bytes()
			hdr.Set("Content-Encoding", enc)
		}
	}
	hdr.Set("Content-Length", strconv.Itoa(len(out)))
	h.requests.WithLabelValues("200").Inc()
	w.Write(out)
}

// chunks yields b in chunks of at most n bytes (at least one, possibly empty, chunk).
func chunks(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for {
			k := min(n, len(b))
			if !yield(b[:k]) || k == len(b) {
				return
			}
			b = b[k:]
		}
	}
}

// httpCompressor picks the first encoding of Accept-Encoding the endpoint supports.
func httpCompressor(accept string) (string, func(io.Writer) io.WriteCloser) {
	for _, part := range strings.Split(accept, ",") {
		enc := strings.TrimSpace(strings.SplitN(part, ";", 2)[0])
		switch strings.ToLower(enc) {
		case "gzip":
			return "gzip", func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }
		case "deflate":
			return "deflate", func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) }
		case "br":
			return "br", func(w io.Writer) io.WriteCloser { return brotli.NewWriter(w) }
		}
	}
	return "", nil
}

func contentType(format string) string {
	f := strings.ToLower(format)
	switch {
	case f == "native" || strings.HasPrefix(f, "rowbinary") || f == "parquet" || f == "arrow" || f == "arrowstream":
		return "application/octet-stream"
	case strings.HasPrefix(f, "json"):
		return "application/json; charset=UTF-8"
	case strings.HasPrefix(f, "tabseparated") || strings.HasPrefix(f, "tsv"):
		return "text/tab-separated-values; charset=UTF-8"
	case strings.HasPrefix(f, "csv"):
		return "text/csv; charset=UTF-8; header=absent"
	}
	return "text/plain; charset=UTF-8"
}

// fail sends ex as ClickHouse does: the status for its code, the code in
// X-ClickHouse-Exception-Code, the text as the body. reason, when set, counts a refusal.
func (h *Handler) fail(w http.ResponseWriter, reason string, ex *Exception) {
	if reason != "" {
		h.refused.WithLabelValues(reason).Inc()
	}
	status := httpStatus(ex.Code)
	h.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("X-ClickHouse-Exception-Code", strconv.Itoa(ex.Code))
	w.WriteHeader(status)
	io.WriteString(w, ex.Text+"\n")
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
