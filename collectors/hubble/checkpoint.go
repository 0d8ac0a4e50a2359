package hubble

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"
)

// A relay's resume point outlives a restart of Meridian in <state_dir>/<relay>.json. It
// is written when the collector stops, once everything it received has been appended
// (edges flushed), and taken (read and removed) at the next start, which then asks the
// relay for the flows since it, as a reconnection does. A process that dies without
// stopping leaves none behind: the next start asks for backfill, rather than resuming
// from a point older than flows it already stored.
type checkpoint struct {
	Last     time.Time `json:"last"`
	Boundary [][]byte  `json:"boundary"` // the flows seen at Last, protobuf wire form
}

func checkpointPath(dir, relay string) string {
	return filepath.Join(dir, url.PathEscape(relay)+".json")
}

// takeCheckpoint reads and removes the checkpoint at path into p; a missing file is
// no checkpoint. A file that does not read is removed too, so it is reported once.
func (p *resumePoint) takeCheckpoint(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	var c checkpoint
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for i, b := range c.Boundary {
		if err := proto.Unmarshal(b, &flowpb.Flow{}); err != nil {
			return fmt.Errorf("%s: boundary flow %d: %w", path, i, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last, p.boundary = c.Last, c.Boundary
	return nil
}

// saveCheckpoint writes p to path (through a temporary file and a rename, so a crash
// mid-write leaves the old state or the new, never half of one). Nothing is written
// before the first flow.
func (p *resumePoint) saveCheckpoint(path string) error {
	p.mu.Lock()
	c := checkpoint{Last: p.last, Boundary: p.boundary}
	p.mu.Unlock()
	if c.Last.IsZero() {
		return nil
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// handOver forgets the relay's resume point, in memory and on disk, once another
// replica streams it.
func (r *relay) handOver() {
	r.resume.reset()
	if r.cfg.StateDir != "" {
		if err := os.Remove(checkpointPath(r.cfg.StateDir, r.rc.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.m.checkpointErrors.Inc()
			r.log.Error("hubble resume point of a relay handed over not removed", "err", err)
		}
	}
}

func (p *resumePoint) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last, p.boundary, p.arena, p.pending, p.from = time.Time{}, nil, nil, nil, time.Time{}
}
