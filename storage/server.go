package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/ClickHouse/ch-go"
	"github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/meridianhq/meridian/internal/secret"
	"github.com/meridianhq/meridian/pipeline"
)

// server talks to a ClickHouse server or cluster over the native protocol with ch-go;
// the DSN is parsed by clickhouse-go so its documented DSN options (secure, skip_verify,
// dial_timeout, username, ...) work. Connections are made on first use.
type server struct {
	opts     ch.Options
	database string
	cluster  bool

	mu   sync.Mutex
	idle map[string][]*ch.Client // idle connections by session database
}

// maxIdle bounds the idle connections kept per database.
const maxIdle = 4

func openServer(cfg Config, sc schema) (*server, error) {
	o, err := clickhouse.ParseDSN(cfg.ClickHouse.DSN)
	if err != nil {
		// url.Error repeats the DSN, password included: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("storage.clickhouse.dsn: invalid: %w", err)
	}
	if len(o.Addr) == 0 {
		return nil, errors.New("storage.clickhouse.dsn: no host")
	}
	pw, err := secret.Read(cfg.ClickHouse.Password())
	if err != nil {
		return nil, err
	}
	password := pw.Reveal()
	timeout := cfg.ClickHouse.DialTimeout
	if o.DialTimeout > 0 && strings.Contains(cfg.ClickHouse.DSN, "dial_timeout") {
		timeout = o.DialTimeout
	}
	return &server{
		opts: ch.Options{
			// One address: for a cluster, point the DSN at a load balancer or any node
			// (inserts go to Distributed tables, which route them).
			Address:     o.Addr[0],
			User:        o.Auth.Username,
			Password:    password,
			TLS:         o.TLS,
			DialTimeout: timeout,
			Compression: ch.CompressionLZ4,
			ClientName:  "meridian",
		},
		database: cfg.Database,
		cluster:  sc.Cluster != "",
		idle:     map[string][]*ch.Client{},
	}, nil
}

// conn takes an idle connection to database or dials a new one.
func (s *server) conn(ctx context.Context, database string) (*ch.Client, error) {
	s.mu.Lock()
	for len(s.idle[database]) > 0 {
		list := s.idle[database]
		c := list[len(list)-1]
		s.idle[database] = list[:len(list)-1]
		if !c.IsClosed() {
			s.mu.Unlock()
			return c, nil
		}
	}
	s.mu.Unlock()
	o := s.opts
	o.Database = database
	return ch.Dial(ctx, o)
}

func (s *server) put(database string, c *ch.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.IsClosed() || len(s.idle[database]) >= maxIdle {
		c.Close()
		return
	}
	s.idle[database] = append(s.idle[database], c)
}

func (s *server) do(ctx context.Context, sql string, q ch.Query) error {
	database := dbFor(sql, s.database)
	c, err := s.conn(ctx, database)
	if err != nil {
		return fmt.Errorf("clickhouse %s: %w", s.opts.Address, err)
	}
	q.Body = sql
	err = c.Do(ctx, q)
	if err != nil && !ch.IsException(err) {
		c.Close() // a broken connection is not reused; an exception leaves it usable
	}
	s.put(database, c)
	if err != nil {
		return fmt.Errorf("clickhouse %s: %w", s.opts.Address, err)
	}
	return nil
}

func (s *server) exec(ctx context.Context, sql string) error { return s.do(ctx, sql, ch.Query{}) }

// query renders the result in the requested format. The native protocol returns blocks,
// not formatted text, so row formats are produced by the server itself with formatRow
// over the query, and Native by re-encoding the blocks as they arrive.
func (s *server) query(ctx context.Context, sql, format string) ([]byte, error) {
	if strings.TrimSpace(sql) == "" {
		return nil, errors.New("clickhouse: empty query")
	}
	var out bytes.Buffer
	switch format {
	case "Native":
		var res proto.Results
		var buf proto.Buffer
		err := s.do(ctx, sql, ch.Query{Result: res.Auto(), OnResult: func(_ context.Context, b proto.Block) error {
			input := make(proto.Input, len(res))
			for i, c := range res {
				input[i] = proto.InputColumn{Name: c.Name, Data: c.Data.(proto.ColInput)}
			}
			buf.Reset()
			if err := b.EncodeRawBlock(&buf, 0, input); err != nil {
				return err
			}
			out.Write(buf.Buf)
			return nil
		}})
		return out.Bytes(), err
	case "", "TabSeparated", "TSV", "TabSeparatedRaw", "CSV", "JSONEachRow", "JSONCompactEachRow", "JSONLines", "NDJSON":
		if format == "" {
			format = "TabSeparated"
		}
		var rows proto.ColStr
		wrapped := fmt.Sprintf("SELECT formatRow(%s, *) FROM (%s)", quote(format), strings.TrimRight(strings.TrimSpace(sql), ";"))
		err := s.do(ctx, wrapped, ch.Query{Result: proto.Results{{Name: "", Data: &rows}}, OnResult: func(context.Context, proto.Block) error {
			for i := range rows.Rows() {
				out.Write(rows.RowBytes(i))
			}
			rows.Reset()
			return nil
		}})
		return out.Bytes(), err
	default:
		return nil, fmt.Errorf("clickhouse: format %q is not available over the server driver (use TabSeparated, CSV, JSONEachRow, JSONCompactEachRow or Native)", format)
	}
}

// insert decodes the Native block into the kind's typed columns (the ones the encoder
// built it from) and sends them as they are: no re-encoding from records.
func (s *server) insert(ctx context.Context, table string, b pipeline.Block) error {
	input, err := decodeNative(b)
	if err != nil {
		return pipeline.Permanent(err) // bytes no retry can make into a block
	}
	set := []ch.Setting{}
	for k, v := range insertSettings(b.Token) {
		set = append(set, ch.Setting{Key: k, Value: v, Important: true})
	}
	if s.cluster {
		// Write through the Distributed table synchronously so the token reaches the
		// replicated local tables, which deduplicate.
		set = append(set, ch.Setting{Key: "distributed_foreground_insert", Value: "1", Important: true})
	}
	// Not input.Into(table): it quotes "db.table" as one identifier.
	return s.do(ctx, "INSERT INTO "+table+" "+input.Columns()+" VALUES", ch.Query{Input: input, Settings: set})
}

// decodeNative reads a Native block into fresh columns of its kind.
func decodeNative(b pipeline.Block) (proto.Input, error) {
	mk, ok := columnSets[b.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %d", b.Kind)
	}
	c := mk().cols()
	res := make(proto.Results, len(c.input))
	for i, col := range c.input {
		res[i] = proto.ResultColumn{Name: col.Name, Data: col.Data.(proto.ColResult)}
	}
	var blk proto.Block
	if err := blk.DecodeRawBlock(proto.NewReader(bytes.NewReader(b.Native)), 0, res); err != nil {
		return nil, fmt.Errorf("native block of %s: %w", b.Kind, err)
	}
	if blk.Rows != b.Rows {
		return nil, fmt.Errorf("native block of %s: %d rows, block says %d", b.Kind, blk.Rows, b.Rows)
	}
	return c.input, nil
}

func (s *server) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, list := range s.idle {
		for _, c := range list {
			c.Close()
		}
	}
	s.idle = map[string][]*ch.Client{}
	return nil
}
