package chdb

import (
	"fmt"
	"syscall"
	"unsafe"
)

// engineSignals are the signals libchdb installs its own handlers for. Those handlers
// catch the Go runtime's faults too: a nil dereference in any goroutine is swallowed and
// the process hangs half-dead, holding the engine's lock, instead of panicking.
var engineSignals = []syscall.Signal{syscall.SIGSEGV, syscall.SIGABRT, syscall.SIGILL, syscall.SIGBUS,
	syscall.SIGSYS, syscall.SIGFPE, syscall.SIGTSTP, syscall.SIGTRAP}

// sigaction is the kernel's struct sigaction (handler, flags, restorer, 8-byte mask),
// kept opaque: it is only read and written back.
type sigaction [4]uint64

// rtSigaction is the raw syscall: the Go runtime owns the handlers and os/signal has no
// call that reads or writes a handler as it is.
func rtSigaction(sig syscall.Signal, act, old *sigaction) error {
	// sigsetsize 8: the kernel's sigset_t is 64 bits.
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig),
		uintptr(unsafe.Pointer(act)), uintptr(unsafe.Pointer(old)), 8, 0, 0); e != 0 {
		return fmt.Errorf("rt_sigaction(%s): %w", sig, e)
	}
	return nil
}

// savedSignals reads the current handler of every engine signal.
func savedSignals() (map[syscall.Signal]sigaction, error) {
	saved := map[syscall.Signal]sigaction{}
	for _, s := range engineSignals {
		var old sigaction
		if err := rtSigaction(s, nil, &old); err != nil {
			return nil, err
		}
		saved[s] = old
	}
	return saved, nil
}

func restoreSignals(saved map[syscall.Signal]sigaction) error {
	for s, act := range saved {
		if err := rtSigaction(s, &act, nil); err != nil {
			return err
		}
	}
	return nil
}

// keepGoSignalHandlers turns the engine's handlers off so that a Go fault ends the
// process with Go's panic and stack trace (and a supervisor can restart it). Turning
// them off also resets those signals to SIG_DFL, which would wipe Go's handlers, so
// they are read before and written back after.
func (l *lib) keepGoSignalHandlers() error {
	saved, err := savedSignals()
	if err != nil {
		return fmt.Errorf("chdb: %w", err)
	}
	l.setSignalHandlersEnabled(0)
	if err := restoreSignals(saved); err != nil {
		return fmt.Errorf("chdb: %w", err)
	}
	return nil
}
