package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/meridianhq/meridian/internal/netns"
	"github.com/meridianhq/meridian/pipeline"
)

// VRRPNode is one keepalived of a POP's front-door pair, as collectors/keepalived follows
// it: the node's name and its notify FIFO.
type VRRPNode struct {
	POP  string `json:"pop"`
	Node string `json:"node"`
	FIFO string `json:"fifo"`
	// Keepalived: Debian's keepalived running VRRP in a network namespace; false: the
	// stand-in writing the same notify lines.
	Keepalived bool `json:"keepalived"`
}

// vrrpPair is a POP's two front-door nodes: real keepalived (netns.VRRPPair) or the
// stand-in. Node 0 has the higher priority.
type vrrpPair interface {
	Start(i int) error
	Stop(i int)
	HoldsVIP(i int) bool
	FIFO(i int) string
}

// Priorities of each pair's nodes: <pop>-fd-1 holds the VIP while it runs.
var vrrpPriorities = [2]int{150, 100}

// vrrp is the lab's Keepalived pairs, one per POP.
type vrrp struct {
	net   *netns.Net // nil with stand-ins
	dir   string
	nodes []VRRPNode
	pairs map[string]vrrpPair

	mu      sync.Mutex
	stopped map[string]int // POP -> the node `fail vrrp` stopped
}

// startVRRP gives every POP a front-door pair: two keepalived daemons in network
// namespaces joined by veth, running VRRP, when root and Debian's keepalived allow;
// stand-ins otherwise. It returns once node 1 of every pair holds the VIP and node 2
// runs as its backup.
func (l *Lab) startVRRP(ctx context.Context) (err error) {
	dir, err := os.MkdirTemp("", "meridian-lab-vrrp-")
	if err != nil {
		return err
	}
	v := &vrrp{dir: dir, pairs: map[string]vrrpPair{}, stopped: map[string]int{}}
	defer func() {
		if err != nil {
			_ = v.close()
		}
	}()
	reason, err := netns.KeepalivedUnavailable()
	if err != nil {
		reason = err.Error()
	}
	if reason == "" {
		if v.net, err = netns.New(); err != nil {
			return err
		}
	}
	for k, pop := range l.inv.POPs {
		names := [2]string{pop.Name + "-fd-1", pop.Name + "-fd-2"}
		var p vrrpPair
		if v.net != nil {
			// Each pair has its own link: the subnet and router id only need to differ
			// for the reader of the records.
			p, err = v.net.VRRPPair(netns.PairConfig{Name: pop.Name, Nodes: names, Priorities: vrrpPriorities,
				Instance: "VI_" + pop.Name, RouterID: 51 + k, Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, byte(k + 1), 0}), 24), Dir: dir})
			if err != nil {
				return fmt.Errorf("lab: POP %s keepalived pair: %w", pop.Name, err)
			}
		} else {
			p = newStandInPair("VI_"+pop.Name, [2]string{filepath.Join(dir, names[0]+".fifo"), filepath.Join(dir, names[1]+".fifo")}, vrrpPriorities)
		}
		v.pairs[pop.Name] = p
		for i, n := range names {
			v.nodes = append(v.nodes, VRRPNode{POP: pop.Name, Node: n, FIFO: p.FIFO(i), Keepalived: v.net != nil})
		}
	}
	// The node of higher priority first, alone, so that the calm lab starts without a
	// contested election.
	for _, i := range []int{0, 1} {
		for pop, p := range v.pairs {
			if err := p.Start(i); err != nil {
				return fmt.Errorf("lab: POP %s front-door node %d: %w", pop, i+1, err)
			}
		}
		if i == 1 {
			break
		}
		for pop, p := range v.pairs {
			if err := waitUntil(ctx, 30*time.Second, func() bool { return p.HoldsVIP(0) }); err != nil {
				return fmt.Errorf("lab: POP %s: %s-fd-1 did not take the VIP: %w", pop, pop, err)
			}
		}
	}
	if v.net != nil {
		l.log.Info("lab: a Keepalived pair per POP, VRRP between network namespaces", "tag", v.net.Tag)
	} else {
		l.log.Info("lab: Keepalived pairs are stand-ins writing the notify FIFOs", "reason", reason)
	}
	l.vrrp = v
	l.state.onChange = append(l.state.onChange, func(f Failure, failed bool) {
		if f.Kind != "vrrp" {
			return
		}
		if err := v.set(f.Target, failed); err != nil {
			l.log.Error("lab: VRRP", "pop", f.Target, "failed", failed, "err", err)
		}
	})
	return nil
}

// waitUntil polls ok until it holds, limit passes or ctx ends.
func waitUntil(ctx context.Context, limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// set fails a POP's VRRP master (stops the daemon of the node holding the VIP, as
// `systemctl stop keepalived` would) or restarts what the failure stopped.
func (v *vrrp) set(pop string, failed bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	p := v.pairs[pop]
	i, stopped := v.stopped[pop]
	switch {
	case failed && !stopped:
		for i = range 2 {
			if p.HoldsVIP(i) {
				p.Stop(i)
				v.stopped[pop] = i
				return nil
			}
		}
		return errors.New("no node holds the VIP")
	case !failed && stopped:
		delete(v.stopped, pop)
		return p.Start(i)
	}
	return nil
}

// close stops every daemon and removes the namespaces and the FIFOs.
func (v *vrrp) close() error {
	var wg sync.WaitGroup
	for _, p := range v.pairs {
		for i := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); p.Stop(i) }()
		}
	}
	wg.Wait()
	var err error
	if v.net != nil {
		err = v.net.Close()
	}
	return errors.Join(err, os.RemoveAll(v.dir))
}

// standInPair writes into each node's notify FIFO the lines Debian's keepalived writes
// for a pair running VRRP (advert_int 1 s, preemption on) when keepalived cannot run
// here, on VRRP's timers (RFC 5798): a starting node is BACKUP and takes the VIP after
// the master down interval, 3 adverts plus its skew ((256 − priority)/256 s), unless it
// hears a master of higher priority; a stopping master writes STOP, closes its FIFO and
// sends a priority-0 advert, so its backup takes over after its skew alone; a node of
// higher priority taking over sends the master back to BACKUP.
type standInPair struct {
	instance string
	fifo     [2]string
	prio     [2]int

	mu    sync.Mutex
	w     [2]*os.File // the node's FIFO while its daemon runs
	state [2]string
	timer [2]*time.Timer // a pending takeover
}

func newStandInPair(instance string, fifo [2]string, prio [2]int) *standInPair {
	return &standInPair{instance: instance, fifo: fifo, prio: prio}
}

func skew(prio int) time.Duration { return time.Duration(256-prio) * time.Second / 256 }

func (s *standInPair) FIFO(i int) string { return s.fifo[i] }

func (s *standInPair) HoldsVIP(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state[i] == pipeline.VRRPMaster
}

// Start opens the node's FIFO as keepalived does (read-write and non-blocking, so that
// lines wait in it for a reader) and starts it as BACKUP.
func (s *standInPair) Start(i int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w[i] != nil {
		return nil
	}
	if err := syscall.Mkfifo(s.fifo[i], 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	f, err := os.OpenFile(s.fifo[i], os.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	s.w[i] = f
	s.set(i, pipeline.VRRPBackup)
	if j := 1 - i; s.state[j] != pipeline.VRRPMaster || s.prio[j] < s.prio[i] {
		s.takeOver(i, 3*time.Second+skew(s.prio[i]))
	}
	return nil
}

// takeOver makes node i MASTER after d, unless it has stopped or become MASTER by then.
func (s *standInPair) takeOver(i int, d time.Duration) {
	s.timer[i] = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.w[i] == nil || s.state[i] != pipeline.VRRPBackup {
			return
		}
		s.set(i, pipeline.VRRPMaster)
		if j := 1 - i; s.state[j] == pipeline.VRRPMaster {
			s.set(j, pipeline.VRRPBackup)
		}
	})
}

// Stop ends the node's daemon: STOP, then its FIFO closes.
func (s *standInPair) Stop(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w[i] == nil {
		return
	}
	if s.timer[i] != nil {
		s.timer[i].Stop()
	}
	master := s.state[i] == pipeline.VRRPMaster
	s.set(i, pipeline.VRRPStop)
	s.w[i].Close()
	s.w[i] = nil
	if j := 1 - i; master && s.w[j] != nil && s.state[j] == pipeline.VRRPBackup {
		s.takeOver(j, skew(s.prio[j]))
	}
}

// set writes the node's new state; a full pipe drops the line, as keepalived's
// non-blocking write does.
func (s *standInPair) set(i int, state string) {
	s.state[i] = state
	_, _ = fmt.Fprintf(s.w[i], "INSTANCE %q %s %d\n", s.instance, state, s.prio[i])
}
