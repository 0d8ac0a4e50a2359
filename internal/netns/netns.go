// Package netns builds a small real network on one machine: network namespaces joined by
// veth pairs, with wireguard-go devices inside them. The lab's real WireGuard mode and
// the WireGuard collector's tests use it. Every name carries a random tag, so two
// instances never collide, and Close removes everything the Net made. All addresses
// live inside the namespaces it creates: nothing is routed to the host or beyond.
//
// It needs root, /dev/net/tun and the commands ip (iproute2) and wireguard-go.
package netns

import (
	"github.com/meridianhq/meridian/internal/proc"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Unavailable says why real namespaces cannot be made on this machine ("" when they can).
// A missing command is not a reason to skip: it is an error naming its Debian package.
func Unavailable() (reason string, err error) {
	if _, err := os.Stat("/dev/net/tun"); err != nil && os.Geteuid() == 0 { // without root, unavailable says so
		return fmt.Sprintf("no /dev/net/tun for wireguard-go: %v", err), nil
	}
	return unavailable("ip", "wireguard-go")
}

// debianPackage names the package of each command the namespaces run.
var debianPackage = map[string]string{"ip": "iproute2", "wireguard-go": "wireguard-go", "keepalived": "keepalived"}

// unavailable says why namespaces running cmds cannot be made here: not being root is a
// reason to skip; a missing command is an error naming its Debian package.
func unavailable(cmds ...string) (reason string, err error) {
	if os.Geteuid() != 0 {
		return "needs root to create network namespaces", nil
	}
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			return "", fmt.Errorf("%s not found: install the Debian package %s", c, debianPackage[c])
		}
	}
	return "", nil
}

// Net is the set of namespaces, links and wireguard-go processes one owner made.
type Net struct {
	// Tag is random hex that every name made by this Net carries.
	Tag string

	mu         sync.Mutex
	namespaces []string
	procs      map[string]*exec.Cmd // device -> its wireguard-go
}

// ownersDir holds a file per live tag naming its owner process, so that a later New can
// remove what an owner killed before its Close left behind.
const ownersDir = "/run/meridian/netns"

// New returns an empty Net with a fresh tag, after removing the namespaces, wireguard-go
// processes and sockets of owners that died without Close.
func New() (*Net, error) {
	sweep()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	n := &Net{Tag: hex.EncodeToString(b), procs: map[string]*exec.Cmd{}}
	if err := os.MkdirAll(ownersDir, 0o700); err != nil {
		return nil, err
	}
	return n, os.WriteFile(filepath.Join(ownersDir, n.Tag), []byte(owner(os.Getpid())), 0o600)
}

// owner identifies a process as "<pid> <start time>", which a reused pid does not match.
func owner(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// Fields after the command's closing parenthesis; the start time is field 22.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 20 {
		return ""
	}
	return fmt.Sprintf("%d %s", pid, f[19])
}

// sweep removes what each dead owner's tag names. Best effort: what it cannot remove, the
// next New tries again.
func sweep() {
	files, _ := os.ReadDir(ownersDir)
	var dead []*Net
	for _, f := range files {
		rec, err := os.ReadFile(filepath.Join(ownersDir, f.Name()))
		var pid int
		if err != nil || len(rec) == 0 {
			continue
		}
		if _, err := fmt.Sscan(string(rec), &pid); err == nil && owner(pid) != string(rec) {
			dead = append(dead, &Net{Tag: f.Name()})
		}
	}
	if len(dead) == 0 {
		return
	}
	all, _ := namespaces()
	for _, d := range dead {
		for _, name := range all {
			if strings.HasPrefix(name, "m"+d.Tag+"-") {
				d.namespaces = append(d.namespaces, name)
			}
		}
		socks, _ := filepath.Glob(socketPath(d.DeviceName("*")))
		for _, sock := range socks {
			_ = os.Remove(sock)
		}
		_ = d.Close()
	}
}

// namespaces lists the machine's named network namespaces.
func namespaces() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); name != "" { // "NAME (id: N)"
			names = append(names, name)
		}
	}
	return names, err
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// AddNamespace creates the namespace "m<tag>-<name>" with its loopback up and returns
// its full name.
func (n *Net) AddNamespace(name string) (string, error) {
	full := "m" + n.Tag + "-" + name
	if err := run("ip", "netns", "add", full); err != nil {
		return "", err
	}
	n.mu.Lock()
	n.namespaces = append(n.namespaces, full)
	n.mu.Unlock()
	return full, run("ip", "-n", full, "link", "set", "lo", "up")
}

// Link joins two namespaces with a veth pair, ifA (addressed addrA) in nsA and ifB in
// nsB, both up. Interface names only need to be unique within their namespace.
func (n *Net) Link(nsA, ifA string, addrA netip.Prefix, nsB, ifB string, addrB netip.Prefix) error {
	if err := run("ip", "-n", nsA, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB); err != nil {
		return err
	}
	for _, end := range []struct {
		ns, dev string
		addr    netip.Prefix
	}{{nsA, ifA, addrA}, {nsB, ifB, addrB}} {
		if err := run("ip", "-n", end.ns, "addr", "add", end.addr.String(), "dev", end.dev); err != nil {
			return err
		}
		if err := n.SetLink(end.ns, end.dev, true); err != nil {
			return err
		}
	}
	return nil
}

// SetLink sets an interface of a namespace up or down.
func (n *Net) SetLink(ns, dev string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return IP(ns, "link", "set", dev, state)
}

// startIn starts a daemon inside ns, writing to out (nil: discarded) with the environment
// env (nil: this process's). It leads its own process group, so that proc.Stop's SIGKILL
// reaches the children it forks too.
func startIn(ns string, out io.Writer, env []string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s in %s: %w", args[0], ns, err)
	}
	return cmd, nil
}

// IP runs `ip -n ns args...` (addresses, rules, routes, neighbours inside ns).
func IP(ns string, args ...string) error {
	return run(append([]string{"ip", "-n", ns}, args...)...)
}

// ListenUDP opens a UDP socket bound to addr inside the namespace ns. A socket stays in
// the namespace it was made in, so this process can then send from inside ns.
func (n *Net) ListenUDP(ns string, addr netip.AddrPort) (*net.UDPConn, error) {
	type result struct {
		c   *net.UDPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// setns changes only this OS thread: keep the goroutine on it, and if the thread
		// cannot be put back in its own namespace, leave it locked so that it exits with
		// the goroutine instead of running other goroutines in ns.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("entering %s: %w", ns, err)}
			return
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// DeviceName is the name of the WireGuard device "wg<tag><short>": device names must be
// unique machine-wide, since each one's UAPI socket is /var/run/wireguard/<name>.sock.
// short is at most 7 characters (interface names have 15).
func (n *Net) DeviceName(short string) string { return "wg" + n.Tag + short }

// WireGuard starts wireguard-go with the device dev inside ns, waits (until ctx ends) for
// its UAPI socket, applies cfg through wgctrl and sets the device up.
func (n *Net) WireGuard(ctx context.Context, ns, dev string, cfg wgtypes.Config) error {
	cmd, err := startIn(ns, nil, append(os.Environ(), "LOG_LEVEL=error"), "wireguard-go", "-f", dev)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.procs[dev] = cmd
	n.mu.Unlock()
	// The socket file appears on bind, before wireguard-go listens: wait for a connection.
	sock := socketPath(dev)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", sock, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	wg, err := wgctrl.New()
	if err != nil {
		return err
	}
	defer wg.Close()
	if err := wg.ConfigureDevice(dev, cfg); err != nil {
		return fmt.Errorf("configuring %s: %w", dev, err)
	}
	return n.SetLink(ns, dev, true)
}

// ConfigureDevice changes a running device's configuration (peers, keepalives).
func ConfigureDevice(dev string, cfg wgtypes.Config) error {
	wg, err := wgctrl.New()
	if err != nil {
		return err
	}
	defer wg.Close()
	return wg.ConfigureDevice(dev, cfg)
}

func socketPath(dev string) string { return "/var/run/wireguard/" + dev + ".sock" }

// StopWireGuard ends dev's wireguard-go (SIGTERM, then SIGKILL after 5 s) and removes
// its socket.
func (n *Net) StopWireGuard(dev string) {
	n.mu.Lock()
	cmd := n.procs[dev]
	delete(n.procs, dev)
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	proc.Stop(cmd, 5*time.Second)
	_ = os.Remove(socketPath(dev))
}

// Close stops every wireguard-go, kills whatever else runs in the namespaces and deletes
// them (their veths go with them).
func (n *Net) Close() error {
	n.mu.Lock()
	devs := make([]string, 0, len(n.procs))
	for d := range n.procs {
		devs = append(devs, d)
	}
	namespaces := n.namespaces
	n.namespaces = nil
	n.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() { defer wg.Done(); n.StopWireGuard(d) }()
	}
	wg.Wait()
	var errs []error
	for _, ns := range namespaces {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, pid := range strings.Fields(string(out)) {
			_ = run("kill", "-9", pid)
		}
		errs = append(errs, run("ip", "netns", "del", ns))
	}
	if err := errors.Join(errs...); err != nil {
		return err // the owner record stays, for a sweep to try again once this process is gone
	}
	if err := os.Remove(filepath.Join(ownersDir, n.Tag)); !os.IsNotExist(err) {
		return err // nil, or a real failure; a second Close finds the record gone
	}
	return nil
}
