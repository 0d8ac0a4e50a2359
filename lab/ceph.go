package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// cephMgr replays a real ceph-mgr prometheus-module capture. osd.0's series are the
// template for every lab OSD; latencies, op counters, up/in and health follow the state.
type cephMgr struct {
	state *State
	lines []string // the capture, minus other OSDs' series
	mu    sync.Mutex
	last  time.Time
	osds  [OSDs]osdCounters
}

type osdCounters struct{ rCount, rSum, wCount, wSum, rOps, wOps, rBytes, wBytes float64 }

// Per-OSD load of the lab cluster and its healthy latencies (the capture's order of size).
const (
	readOpsPerSec   = 180.0
	writeOpsPerSec  = 120.0
	readLatency     = 0.0006 // s
	writeLatency    = 0.0025 // s
	slowFactor      = 40.0
	opBytes         = 16384.0
	healthyApplyMs  = 3.0
	healthyCommitMs = 3.0
)

func newCephMgr(capture string, state *State) (*cephMgr, error) {
	data, err := os.ReadFile(capture)
	if err != nil {
		return nil, fmt.Errorf("lab: ceph capture: %w", err)
	}
	m := &cephMgr{state: state}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, `ceph_daemon="osd.`); i >= 0 && !strings.HasPrefix(line[i:], `ceph_daemon="osd.0"`) {
			continue
		}
		m.lines = append(m.lines, line)
	}
	return m, sc.Err()
}

func (m *cephMgr) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write(m.render(time.Now()))
}

// advance moves every OSD's counters on to now at its current latency.
func (m *cephMgr) advance(now time.Time) {
	if m.last.IsZero() {
		m.last = now.Add(-time.Second)
	}
	dt := now.Sub(m.last).Seconds()
	m.last = now
	for id := range m.osds {
		mode := m.state.osdMode(id)
		if mode == "down" {
			continue
		}
		f := 1.0
		if mode == "slow" {
			f = slowFactor
		}
		c := &m.osds[id]
		r, wr := readOpsPerSec*dt, writeOpsPerSec*dt
		c.rCount += r
		c.rSum += r * readLatency * f
		c.wCount += wr
		c.wSum += wr * writeLatency * f
		c.rOps += r
		c.wOps += wr
		c.rBytes += r * opBytes
		c.wBytes += wr * opBytes
	}
}

func (m *cephMgr) render(now time.Time) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advance(now)
	var down, slow []int
	for id := range m.osds {
		switch m.state.osdMode(id) {
		case "down":
			down = append(down, id)
		case "slow":
			slow = append(slow, id)
		}
	}
	var b bytes.Buffer
	for _, line := range m.lines {
		switch {
		case strings.HasPrefix(line, "ceph_health_status "):
			status := 0
			if len(down)+len(slow) > 0 {
				status = 1
			}
			fmt.Fprintf(&b, "ceph_health_status %d.0\n", status)
		case strings.HasPrefix(line, "# TYPE ceph_health_detail "):
			b.WriteString(line + "\n")
			if len(down) > 0 {
				b.WriteString("ceph_health_detail{name=\"OSD_DOWN\",severity=\"HEALTH_WARN\"} 1.0\n")
			}
			if len(slow) > 0 {
				b.WriteString("ceph_health_detail{name=\"SLOW_OPS\",severity=\"HEALTH_WARN\"} 1.0\n")
			}
		case strings.Contains(line, `ceph_daemon="osd.0"`):
			for id := range m.osds {
				m.renderOSD(&b, line, id)
			}
		default:
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

// renderOSD writes the template line for OSD id, with the values the state dictates.
func (m *cephMgr) renderOSD(b *bytes.Buffer, line string, id int) {
	line = strings.Replace(line, `ceph_daemon="osd.0"`, fmt.Sprintf(`ceph_daemon="osd.%d"`, id), 1)
	name := line[:strings.IndexAny(line, "{ ")]
	mode := m.state.osdMode(id)
	f := 1.0
	if mode == "slow" {
		f = slowFactor
	}
	c := m.osds[id]
	var v float64
	switch name {
	case "ceph_osd_metadata":
		line = replaceLabel(line, "hostname", osdHost(id))
		b.WriteString(line + "\n")
		return
	case "ceph_osd_up", "ceph_osd_in":
		v = 1
		if mode == "down" {
			v = 0
		}
	case "ceph_osd_apply_latency_ms":
		v = healthyApplyMs * f
	case "ceph_osd_commit_latency_ms":
		v = healthyCommitMs * f
	case "ceph_osd_op_r_latency_count":
		v = c.rCount
	case "ceph_osd_op_r_latency_sum":
		v = c.rSum
	case "ceph_osd_op_w_latency_count":
		v = c.wCount
	case "ceph_osd_op_w_latency_sum":
		v = c.wSum
	case "ceph_osd_op_r":
		v = c.rOps
	case "ceph_osd_op_w":
		v = c.wOps
	case "ceph_osd_op_r_out_bytes":
		v = c.rBytes
	case "ceph_osd_op_w_in_bytes":
		v = c.wBytes
	default:
		b.WriteString(line + "\n")
		return
	}
	b.WriteString(line[:strings.LastIndexByte(line, ' ')+1])
	b.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
	b.WriteByte('\n')
}

func replaceLabel(line, label, value string) string {
	key := label + `="`
	i := strings.Index(line, key)
	if i < 0 {
		return line
	}
	j := strings.IndexByte(line[i+len(key):], '"')
	return line[:i+len(key)] + value + line[i+len(key)+j:]
}
