// Package proc stops the daemons Meridian's lab and tests start (wireguard-go, Ceph).
package proc

import (
	"os/exec"
	"syscall"
	"time"
)

// Stop ends cmd's process group with SIGTERM, SIGKILL after grace, and waits for it. The
// command must have been started with SysProcAttr.Setpgid, so that its children go too.
func Stop(cmd *exec.Cmd, grace time.Duration) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
