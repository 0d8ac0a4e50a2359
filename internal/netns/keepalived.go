package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meridianhq/meridian/internal/proc"
	"github.com/meridianhq/meridian/internal/testlog"
)

// KeepalivedUnavailable says why a keepalived pair cannot run here ("" when it can): not
// being root is a reason; a missing command is an error naming its Debian package.
func KeepalivedUnavailable() (reason string, err error) {
	return unavailable("ip", "keepalived")
}

// PairConfig describes a front-door pair: two nodes, each running keepalived in its own
// namespace, joined by a veth pair named vrrp0 at both ends.
type PairConfig struct {
	Name       string    // short, unique within the Net: the namespaces are <Name>1 and <Name>2
	Nodes      [2]string // the nodes' names, as keepalived's router_id
	Priorities [2]int    // VRRP priorities, 1-254
	Instance   string    // the vrrp_instance's name
	RouterID   int       // virtual_router_id, 1-255
	// Subnet is a /24 living only inside the pair: node i is .i+1, the VIP .100.
	Subnet netip.Prefix
	Dir    string // configuration, pid files and the notify FIFOs
}

// VRRPPair is a front-door pair running real VRRP (advert_int 1, preemption on) between
// two namespaces, each keepalived writing its notify FIFO.
type VRRPPair struct {
	cfg PairConfig
	NS  [2]string  // each node's namespace
	VIP netip.Addr // the address the pair holds

	mu   sync.Mutex
	proc [2]*exec.Cmd
	out  [2]testlog.Buffer // written by exec's copying goroutines
}

// VRRPPair makes the pair's namespaces and link; Start runs each node's keepalived.
func (n *Net) VRRPPair(cfg PairConfig) (*VRRPPair, error) {
	p := &VRRPPair{cfg: cfg}
	base := cfg.Subnet.Masked().Addr().As4()
	addr := func(last byte) netip.Addr { return netip.AddrFrom4([4]byte{base[0], base[1], base[2], last}) }
	p.VIP = addr(100)
	for i := range p.NS {
		var err error
		if p.NS[i], err = n.AddNamespace(fmt.Sprintf("%s%d", cfg.Name, i+1)); err != nil {
			return nil, err
		}
	}
	if err := n.Link(p.NS[0], "vrrp0", netip.PrefixFrom(addr(1), 24), p.NS[1], "vrrp0", netip.PrefixFrom(addr(2), 24)); err != nil {
		return nil, err
	}
	return p, nil
}

// FIFO is node i's notify FIFO (global_defs notify_fifo).
func (p *VRRPPair) FIFO(i int) string {
	return filepath.Join(p.cfg.Dir, p.cfg.Nodes[i]+".fifo")
}

// Start runs node i's keepalived in the foreground, VRRP only, as state BACKUP: the node
// of higher priority takes the VIP once it has heard no better advert for the master
// down interval (3 adverts plus skew), and takes it back when it returns. The FIFO is
// made first, so that the daemon's first lines wait in it for a reader.
func (p *VRRPPair) Start(i int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc[i] != nil {
		return nil
	}
	node := p.cfg.Nodes[i]
	if err := syscall.Mkfifo(p.FIFO(i), 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	conf := fmt.Sprintf(`global_defs {
  notify_fifo %s
  router_id %s
}
vrrp_instance %s {
  state BACKUP
  interface vrrp0
  virtual_router_id %d
  priority %d
  advert_int 1
  virtual_ipaddress {
    %s/24
  }
}
`, p.FIFO(i), node, p.cfg.Instance, p.cfg.RouterID, p.cfg.Priorities[i], p.VIP)
	path := filepath.Join(p.cfg.Dir, node+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return err
	}
	cmd, err := startIn(p.NS[i], &p.out[i], nil, "keepalived", "--dont-fork", "--log-console", "--vrrp",
		"-f", path, "-p", filepath.Join(p.cfg.Dir, node+".pid"), "-r", filepath.Join(p.cfg.Dir, node+".vrrp.pid"))
	if err != nil {
		return err
	}
	p.proc[i] = cmd
	return nil
}

// Stop ends node i's keepalived as systemd does (SIGTERM: it hands the VIP over with a
// priority 0 advert), and waits for it (SIGKILL after 5 s).
func (p *VRRPPair) Stop(i int) {
	p.mu.Lock()
	cmd := p.proc[i]
	p.proc[i] = nil
	p.mu.Unlock()
	if cmd != nil {
		proc.Stop(cmd, 5*time.Second)
	}
}

// HoldsVIP reports whether the VIP is on node i's interface: what clients would reach.
func (p *VRRPPair) HoldsVIP(i int) bool {
	out, err := exec.Command("ip", "-n", p.NS[i], "-o", "addr", "show", "dev", "vrrp0").Output()
	return err == nil && strings.Contains(string(out), " "+p.VIP.String()+"/")
}

// Output is what node i's keepalived has logged, for a failing test.
func (p *VRRPPair) Output(i int) string { return p.out[i].String() }
