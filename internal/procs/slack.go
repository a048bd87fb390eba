package procs

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// execedEnv marks the process ExecWithTimerSlack executed.
const execedEnv = "WEFT_TIMER_SLACK_EXECED"

// TimerSlack is the timer slack of the calling thread: how late the kernel
// may fire its timers, so that it can serve several with one wakeup.
func TimerSlack() (time.Duration, error) {
	ns, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("reading the timer slack: %w", err)
	}
	return time.Duration(ns), nil
}

// ExecWithTimerSlack gives every thread of this process a timer slack of
// at least d, by setting it on the calling thread and executing the same
// binary again with the same arguments and environment (the process keeps
// its pid). It returns nil without executing anything when the slack is
// already at least d, as it is in the executed process; it returns only
// on an error otherwise.
//
// Why: an idle process wakes for its timers and its packets, and each time
// the Go runtime's sysmon thread wakes too (at the timer, or when the first
// system call after a deep sleep wakes it) and then polls every 20 µs
// until the process is idle again. With Linux's default slack of 50 µs a
// poll costs a thread switch every ~0.1 ms: in a 25-member mesh, sysmon
// made three quarters of an idle agent's ~40 thread wakeups a second. With
// a slack of a millisecond or more it usually polls once. Packets are not
// delayed (a socket wakes its reader at once); timers fire up to d late.
//
// The slack is a thread's and is inherited by the threads it creates, and
// sysmon is created before any package's init runs, so it cannot be set
// for all threads from inside without CAP_SYS_NICE
// (/proc/<tid>/timerslack_ns of another thread). A thread's slack is kept
// across execve, so the process executes itself once, early, before it has
// opened anything that matters.
func ExecWithTimerSlack(d time.Duration) error {
	if d <= 0 {
		return errors.New("timer slack: want a positive duration")
	}
	// Set in the executed process's environment: it executes itself once
	// at most, even where the kernel does not keep the slack (it ignores
	// it for real-time threads) and so the check below fails again.
	if v, ok := os.LookupEnv(execedEnv); ok {
		os.Unsetenv(execedEnv) // not for the processes it starts
		if cur, err := TimerSlack(); err == nil && cur < d {
			return fmt.Errorf("timer slack %v after executing itself with %v (ignored by the kernel?)", cur, v)
		}
		return nil
	}
	cur, err := TimerSlack()
	if err != nil {
		return err
	}
	if cur >= d {
		return nil
	}
	// prctl sets the slack of this thread only; the exec must come from
	// the same thread. It never returns on success, so the lock is not
	// released then.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d.Nanoseconds()), 0, 0, 0); err != nil {
		return fmt.Errorf("setting the timer slack: %w", err)
	}
	// The binary's own path, not /proc/self/exe: the kernel names the
	// process after the file executed, and ps, top and pgrep would show
	// "exe". /proc/self/exe only if the path is gone.
	env := append(os.Environ(), execedEnv+"="+d.String())
	exe, err := os.Executable()
	if err == nil {
		err = unix.Exec(exe, os.Args, env)
	}
	if err != nil {
		err = unix.Exec("/proc/self/exe", os.Args, env)
	}
	if err != nil {
		// Leave this thread as it was: the process goes on without.
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(cur.Nanoseconds()), 0, 0, 0)
		return fmt.Errorf("executing itself with a timer slack of %v: %w", d, err)
	}
	return nil
}
