package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/ClickHouse/ch-go/compress"
	"github.com/ClickHouse/ch-go/proto"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage"
	"github.com/meridianhq/meridian/storage/chdb"
)

// shimRevision is the protocol revision the shim speaks: before custom serialization
// flags, so a protocol block body is exactly a Native-format block.
const shimRevision = 54453

// chShim is a test double for a ClickHouse server where none can run: it speaks the real
// native protocol (ch-go's own packet encoders) and runs what it receives on the embedded
// engine through backend. Inserts are decoded into the kind's columns and stored with the
// client's deduplication token; SELECT results are sent back as protocol data blocks.
type chShim struct {
	t       *testing.T
	backend *storage.Store
	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	queries []string
}

func startShim(t *testing.T, backend *storage.Store) *chShim {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sh := &chShim{t: t, backend: backend, ln: ln}
	sh.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			sh.wg.Go(func() {
				defer c.Close()
				if err := sh.serve(c); err != nil && !errors.Is(err, io.EOF) {
					t.Logf("shim: %v", err)
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); sh.wg.Wait() })
	return sh
}

func (sh *chShim) addr() string { return sh.ln.Addr().String() }

type shimConn struct {
	net.Conn
	r   *proto.Reader
	buf proto.Buffer
	cw  *compress.Writer
	ver int
}

func (c *shimConn) flush() error {
	_, err := c.Write(c.buf.Buf)
	c.buf.Reset()
	return err
}

func (sh *chShim) serve(nc net.Conn) error {
	c := &shimConn{Conn: nc, r: proto.NewReader(nc), cw: compress.NewWriter(compress.LevelZero, compress.LZ4)}
	if code, err := c.r.UVarInt(); err != nil || proto.ClientCode(code) != proto.ClientCodeHello {
		return errors.Join(errors.New("no hello"), err)
	}
	var hello proto.ClientHello
	if err := hello.Decode(c.r); err != nil {
		return err
	}
	c.ver = min(hello.ProtocolVersion, shimRevision)
	srv := proto.ServerHello{Name: "ClickHouse", Major: 26, Minor: 7, Revision: shimRevision, Timezone: "UTC", DisplayName: "shim"}
	srv.EncodeAware(&c.buf, c.ver)
	if err := c.flush(); err != nil {
		return err
	}
	for {
		code, err := c.r.UVarInt()
		if err != nil {
			return err
		}
		switch proto.ClientCode(code) {
		case proto.ClientCodePing:
			proto.ServerCodePong.Encode(&c.buf)
			if err := c.flush(); err != nil {
				return err
			}
		case proto.ClientCodeQuery:
			if err := sh.query(c); err != nil {
				return err
			}
		default:
			return errors.New("unexpected packet " + proto.ClientCode(code).String())
		}
	}
}

// readBlock reads one client Data packet into target (nil: skip).
func (c *shimConn) readBlock(compressed bool, target proto.Result) (proto.Block, error) {
	var blk proto.Block
	if code, err := c.r.UVarInt(); err != nil || proto.ClientCode(code) != proto.ClientCodeData {
		return blk, errors.Join(errors.New("want a data packet"), err)
	}
	var d proto.ClientData
	if err := d.DecodeAware(c.r, c.ver); err != nil {
		return blk, err
	}
	if compressed {
		c.r.EnableCompression()
		defer c.r.DisableCompression()
	}
	err := blk.DecodeBlock(c.r, c.ver, target)
	return blk, err
}

// sendBlock sends one Data packet holding input.
func (c *shimConn) sendBlock(compressed bool, rows int, input proto.Input) error {
	proto.ServerCodeData.Encode(&c.buf)
	c.buf.PutString("")
	var body proto.Buffer
	blk := proto.Block{Columns: len(input), Rows: rows}
	if err := blk.EncodeBlock(&body, c.ver, input); err != nil {
		return err
	}
	if compressed {
		if err := c.cw.Compress(body.Buf); err != nil {
			return err
		}
		c.buf.PutRaw(c.cw.Data)
	} else {
		c.buf.PutRaw(body.Buf)
	}
	return nil
}

// exception sends err as a server exception, with the engine's error code when it has one
// (else UNKNOWN_EXCEPTION), as a real server would.
func (c *shimConn) exception(err error) error {
	proto.ServerCodeException.Encode(&c.buf)
	code := proto.Error(1002)
	if ce := (*chdb.Error)(nil); errors.As(err, &ce) && ce.Code != 0 {
		code = proto.Error(ce.Code)
	}
	ex := proto.Exception{Code: code, Name: "DB::Exception", Message: err.Error()}
	ex.EncodeAware(&c.buf, c.ver)
	return c.flush()
}

func (sh *chShim) query(c *shimConn) error {
	var q proto.Query
	if err := q.DecodeAware(c.r, c.ver); err != nil {
		return err
	}
	sh.mu.Lock()
	sh.queries = append(sh.queries, q.Body)
	sh.mu.Unlock()
	compressed := q.Compression == proto.CompressionEnabled
	if _, err := c.readBlock(compressed, nil); err != nil { // end of external tables
		return err
	}
	ctx := context.Background()
	if strings.HasPrefix(q.Body, "INSERT INTO ") {
		return sh.insert(ctx, c, q, compressed)
	}
	out, err := sh.backend.Query(ctx, q.Body, "Native")
	if err != nil {
		return c.exception(err)
	}
	r := proto.NewReader(bytes.NewReader(out))
	for len(out) > 0 {
		var res proto.Results
		var blk proto.Block
		if err := blk.DecodeRawBlock(r, 0, res.Auto()); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return c.exception(err)
		}
		input := make(proto.Input, len(res))
		for i, col := range res {
			input[i] = proto.InputColumn{Name: col.Name, Data: col.Data.(proto.ColInput)}
		}
		if err := c.sendBlock(compressed, blk.Rows, input); err != nil {
			return err
		}
	}
	proto.ServerCodeEndOfStream.Encode(&c.buf)
	return c.flush()
}

// insert answers with the table's columns, then stores each data block the client sends.
func (sh *chShim) insert(ctx context.Context, c *shimConn, q proto.Query, compressed bool) error {
	table := strings.Fields(strings.TrimPrefix(q.Body, "INSERT INTO "))[0]
	kind, ok := pipeline.Kind(0), false
	for k, name := range storage.Tables {
		if strings.HasSuffix(table, "."+name) {
			kind, ok = k, true
		}
	}
	if !ok {
		return c.exception(errors.New("shim: unknown table " + table))
	}
	// A server refuses an INSERT into a missing table before it sends the header.
	if _, err := sh.backend.Query(ctx, "SELECT * FROM "+table+" LIMIT 0", "TabSeparated"); err != nil {
		return c.exception(err)
	}
	// The header: the table's columns, with no rows.
	input := storage.NewColumns(kind)
	if err := c.sendBlock(compressed, 0, input); err != nil {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	token := ""
	for _, s := range q.Settings {
		if s.Key == "insert_deduplication_token" {
			token = s.Value
		}
	}
	// The client sends every block and the end marker before it reads the answer: the
	// first refused block's error is sent after them, and later blocks are discarded.
	var refused error
	for {
		in := storage.NewColumns(kind)
		res := make(proto.Results, len(in))
		for i, col := range in {
			res[i] = proto.ResultColumn{Name: col.Name, Data: col.Data.(proto.ColResult)}
		}
		blk, err := c.readBlock(compressed, res)
		if err != nil {
			return err
		}
		if blk.End() {
			break
		}
		var native proto.Buffer
		if err := (proto.Block{Columns: len(in), Rows: blk.Rows}).EncodeRawBlock(&native, 0, in); err != nil {
			return err
		}
		if refused == nil {
			refused = sh.backend.Insert(ctx, pipeline.Block{Kind: kind, Rows: blk.Rows, Token: token, Native: native.Buf})
		}
	}
	if refused != nil {
		return c.exception(refused)
	}
	proto.ServerCodeEndOfStream.Encode(&c.buf)
	return c.flush()
}
