package netlab

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is a lab process (an agent, a sidecar) and the channel closed
// when it has exited.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Stop signals the process and waits for it to exit (SIGKILL after 10 s).
// Stopping a stopped process does nothing.
func (p *process) Stop(sig syscall.Signal) {
	if p.cmd == nil || !p.Running() {
		return
	}
	StopProcess(p.cmd.Process, p.done, sig, 10*time.Second)
}

// StopProcess sends sig to proc and waits until done is closed (proc has
// been waited for), sending SIGKILL once grace has passed.
func StopProcess(proc *os.Process, done <-chan struct{}, sig syscall.Signal, grace time.Duration) {
	proc.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		proc.Kill()
		<-done
	}
}

// Running reports whether the process is alive.
func (p *process) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid is the process id (for an agent, weft's own: `ip netns exec` execs it
// in place), 0 when it is not running.
func (p *process) Pid() int {
	if !p.Running() {
		return 0
	}
	return p.cmd.Process.Pid
}
