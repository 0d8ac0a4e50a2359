package pipeline

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Spool file layout (little endian), one file per block, named <seq, 20 digits>.blk:
//
//	magic "MRDSPL01" | kind u8 | rows u32 | token length u16 | token | native length u64 |
//	native | crc32c (Castagnoli) of everything before it, u32
//
// A file is written as <name>.tmp, fsynced, renamed and the directory fsynced, so a
// <seq>.blk either is complete or fails its length or checksum check (a torn write when
// fsync is off, or a damaged disk); such files and left-over .tmp files are moved to
// corrupt/ and reported at start. Blocks an Inserter rejects for good go to rejected/.
const (
	spoolMagic  = "MRDSPL01"
	spoolExt    = ".blk"
	tmpExt      = ".tmp"
	corruptDir  = "corrupt"
	rejectedDir = "rejected"
	headerFixed = len(spoolMagic) + 1 + 4 + 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// spoolEntry is a block that is spooled (or, after a disk error, held only in memory)
// and not yet stored.
type spoolEntry struct {
	seq    uint64
	kind   Kind
	rows   int
	token  string
	size   int64  // bytes reserved in the spool
	native []byte // nil when the block is to be read back from disk
	onDisk bool
}

// spool bounds the bytes of blocks waiting to be stored and keeps them on disk.
type spool struct {
	dir   string
	max   int64
	fsync bool
	log   *slog.Logger
	m     *metrics

	seq atomic.Uint64

	mu     sync.Mutex
	bytes  int64
	blocks int
	room   chan struct{} // closed (and replaced) whenever bytes are freed
	// A backpressure episode runs from the first wait for room until the spool is back
	// under half its bound, so a spool hovering at its limit logs one episode, not many.
	pressured bool
	since     time.Time

	onWrite func(error) // told each write's outcome (readiness), when set
}

func spoolName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, spoolExt) }

// openSpool opens (creating) the spool directory and returns the blocks left by a previous
// run, oldest first. Damaged files are moved aside and reported, never fatal.
func openSpool(cfg SpoolConfig, log *slog.Logger, m *metrics) (*spool, []*spoolEntry, error) {
	s := &spool{dir: cfg.Path, max: int64(cfg.MaxBytes), fsync: cfg.Fsync, log: log, m: m, room: make(chan struct{})}
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("pipeline spool %s: %w", s.dir, err)
	}
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("pipeline spool %s: %w", s.dir, err)
	}
	var entries []*spoolEntry
	for _, de := range des {
		name := de.Name()
		if de.IsDir() {
			continue
		}
		if strings.HasSuffix(name, tmpExt) {
			s.quarantine(name, errors.New("incomplete write (process stopped before rename)"))
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, spoolExt), 10, 64)
		if !strings.HasSuffix(name, spoolExt) || err != nil {
			s.log.Warn("pipeline spool: ignoring unknown file", "dir", s.dir, "file", name)
			continue
		}
		e, err := s.readEntry(seq)
		if err != nil {
			s.quarantine(name, err)
			continue
		}
		e.native = nil // read again when its turn comes; keeps start-up memory flat
		entries = append(entries, e)
		s.bytes += e.size
		s.blocks++
		s.seq.Store(max(s.seq.Load(), seq))
	}
	slices.SortFunc(entries, func(a, b *spoolEntry) int { return cmp.Compare(a.seq, b.seq) })
	s.gauges()
	if len(entries) > 0 {
		s.log.Info("pipeline spool: recovered blocks from a previous run", "dir", s.dir, "blocks", len(entries), "bytes", s.bytes)
	}
	return s, entries, nil
}

// quarantine moves a damaged file to corrupt/ so it is reported once and kept for a human.
func (s *spool) quarantine(name string, cause error) {
	s.m.spoolCorrupt.Inc()
	s.log.Error("pipeline spool: damaged file moved aside", "dir", s.dir, "file", name, "dest", corruptDir, "err", cause)
	if err := s.moveTo(corruptDir, name); err != nil {
		s.log.Error("pipeline spool: cannot move damaged file", "file", name, "err", err)
	}
}

func (s *spool) moveTo(sub, name string) error {
	if err := os.MkdirAll(filepath.Join(s.dir, sub), 0o750); err != nil {
		return err
	}
	return os.Rename(filepath.Join(s.dir, name), filepath.Join(s.dir, sub, name))
}

// wait blocks until size bytes fit, or until force is closed (at shutdown nothing accepted
// may be lost, so the bound is then overshot by the blocks still in memory). A block larger
// than the whole spool is let in when the spool is empty.
func (s *spool) wait(size int64, force <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.bytes > 0 && s.bytes+size > s.max && !isClosed(force) {
		if !s.pressured {
			s.pressured, s.since = true, time.Now()
			s.m.backpressure.Set(1)
			s.log.Warn("pipeline spool full: applying backpressure to collectors until storage catches up",
				"dir", s.dir, "bytes", s.bytes, "max_bytes", s.max, "blocks", s.blocks)
		}
		room := s.room
		s.mu.Unlock()
		select {
		case <-room:
		case <-force:
		}
		s.mu.Lock()
	}
	s.bytes += size
	s.blocks++
	s.gauges()
}

// put reserves room for the block (waiting while the spool is full) and writes it. When the
// disk write fails the block is still returned, held in memory, so it is not lost while
// the process runs.
func (s *spool) put(seq uint64, b Block, force <-chan struct{}) *spoolEntry {
	e := &spoolEntry{seq: seq, kind: b.Kind, rows: b.Rows, token: b.Token, native: b.Native}
	e.size = int64(headerFixed + len(b.Token) + 8 + len(b.Native) + 4)
	s.wait(e.size, force)
	err := s.write(e)
	if s.onWrite != nil {
		s.onWrite(err)
	}
	if err != nil {
		s.m.spoolWriteErrors.Inc()
		s.log.Error("pipeline spool: write failed, block held in memory only", "dir", s.dir, "kind", b.Kind, "rows", b.Rows, "err", err)
		return e
	}
	e.onDisk = true
	return e
}

func (s *spool) write(e *spoolEntry) error {
	final := filepath.Join(s.dir, spoolName(e.seq))
	tmp := final + tmpExt
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	err = writeBlock(f, e)
	if err == nil && s.fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err == nil && s.fsync {
		err = syncDir(s.dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

func writeBlock(w io.Writer, e *spoolEntry) error {
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriter(io.MultiWriter(w, crc))
	var hdr [headerFixed]byte
	copy(hdr[:], spoolMagic)
	hdr[len(spoolMagic)] = byte(e.kind)
	binary.LittleEndian.PutUint32(hdr[len(spoolMagic)+1:], uint32(e.rows))
	binary.LittleEndian.PutUint16(hdr[len(spoolMagic)+5:], uint16(len(e.token)))
	bw.Write(hdr[:])
	bw.WriteString(e.token)
	bw.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(e.native))))
	bw.Write(e.native)
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(binary.LittleEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readEntry reads and checks one spool file.
func (s *spool) readEntry(seq uint64) (*spoolEntry, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, spoolName(seq)))
	if err != nil {
		return nil, err
	}
	return decodeBlock(seq, data)
}

func decodeBlock(seq uint64, data []byte) (*spoolEntry, error) {
	if len(data) < headerFixed+8+4 || string(data[:len(spoolMagic)]) != spoolMagic {
		return nil, fmt.Errorf("torn or foreign file: %d bytes, no complete header", len(data))
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	e := &spoolEntry{seq: seq, size: int64(len(data)), onDisk: true}
	e.kind = Kind(data[len(spoolMagic)])
	e.rows = int(binary.LittleEndian.Uint32(data[len(spoolMagic)+1:]))
	tl := int(binary.LittleEndian.Uint16(data[len(spoolMagic)+5:]))
	off := headerFixed + tl
	if off+8 > len(body) {
		return nil, fmt.Errorf("torn file: %d bytes, token of %d bytes does not fit", len(data), tl)
	}
	e.token = string(data[headerFixed:off])
	nl := binary.LittleEndian.Uint64(data[off:])
	off += 8
	if uint64(len(body)-off) != nl {
		return nil, fmt.Errorf("torn file: native block of %d bytes announced, %d present", nl, len(body)-off)
	}
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return nil, fmt.Errorf("checksum mismatch: stored %08x, computed %08x", sum, got)
	}
	if e.kind.String() == "unknown" {
		return nil, fmt.Errorf("unknown record kind %d", e.kind)
	}
	e.native = data[off : off+int(nl)]
	return e, nil
}

// block returns the entry as a Block, reading it back from disk when it is not in memory.
func (s *spool) block(e *spoolEntry) (Block, error) {
	native := e.native
	if native == nil {
		r, err := s.readEntry(e.seq)
		if err != nil {
			return Block{}, err
		}
		native = r.native
	}
	return Block{Kind: e.kind, Rows: e.rows, Token: e.token, Native: native}, nil
}

// remove forgets a stored block and frees its room.
func (s *spool) remove(e *spoolEntry) {
	if e.onDisk {
		if err := os.Remove(filepath.Join(s.dir, spoolName(e.seq))); err != nil && !errors.Is(err, os.ErrNotExist) {
			// A left-over file is inserted again after a restart and deduplicated by its token.
			s.log.Error("pipeline spool: cannot remove stored block", "file", spoolName(e.seq), "err", err)
		}
	}
	s.release(e)
}

// reject keeps a block the Inserter refused for good in rejected/ for a human to inspect.
func (s *spool) reject(e *spoolEntry) {
	if e.onDisk {
		if err := s.moveTo(rejectedDir, spoolName(e.seq)); err != nil {
			s.log.Error("pipeline spool: cannot move rejected block", "file", spoolName(e.seq), "err", err)
		}
	}
	s.release(e)
}

func (s *spool) release(e *spoolEntry) {
	s.mu.Lock()
	s.bytes -= e.size
	s.blocks--
	s.gauges()
	if s.pressured && s.bytes <= s.max/2 {
		s.pressured = false
		s.m.backpressure.Set(0)
		s.log.Info("pipeline spool has room again: backpressure released", "dir", s.dir, "bytes", s.bytes, "after", time.Since(s.since).Round(time.Millisecond))
	}
	close(s.room)
	s.room = make(chan struct{})
	s.mu.Unlock()
}

func (s *spool) gauges() {
	s.m.spoolBytes.Set(float64(s.bytes))
	s.m.spoolBlocks.Set(float64(s.blocks))
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
