// Package procs runs an idle process on one P (GOMAXPROCS=1) and gives it
// the runtime's default back as soon as it is busy.
//
// An idle weft agent wakes a few dozen times a second (gossip rounds,
// probes, keepalives) and does a few microseconds of work each time. With
// several Ps every wakeup also wakes a spinning thread that looks for more
// work and finds none: in a 25-member mesh on two cores, agents at
// GOMAXPROCS=1 used 27 % less CPU than at 2 (docs/performance.md). Under
// load (a userspace tunnel carrying traffic, a mesh forming) the
// parallelism matters, so the governor samples the process's own CPU time
// and switches back within one interval (or one poke after it).
package procs

import (
	"context"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Config tunes the governor. The zero value of a field means its default.
type Config struct {
	// Interval is how often CPU use is sampled (1 s).
	Interval time.Duration
	// Busy is the CPU use, in cores, over one interval at or above which
	// the process gets all its Ps back (0.1).
	Busy float64
	// Idle is the CPU use, in cores, below which an interval counts as
	// idle (0.02).
	Idle float64
	// IdleFor is how long every interval must have been idle before the
	// process drops to one P (30 s).
	IdleFor time.Duration
	// Max is the P count when busy (0: the runtime's default, which
	// follows the CPU count and cgroup quota).
	Max int
	// Poke, if set, is a wakeup the process has anyway (the agent's probes
	// of other members, about once a second): Run samples then, at most
	// once an Interval, and on a timer of its own only after Fallback
	// without a poke. Its own timer woke an idle agent every second: each
	// wakeup costs an idle process ~0.15 ms of CPU on the benchmark machine
	// (a timer also wakes the runtime's sysmon thread), 7 % of an idle
	// agent's in a 25-member mesh.
	Poke <-chan struct{}
	// Fallback is how long Run waits for a poke before it samples anyway
	// (10 s).
	Fallback time.Duration

	// usage and set replace getrusage and runtime.GOMAXPROCS (tests).
	usage func() (time.Duration, error)
	set   func(n int)
}

func (c *Config) setDefaults() {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Busy <= 0 {
		c.Busy = 0.1
	}
	if c.Idle <= 0 {
		c.Idle = 0.02
	}
	if c.IdleFor <= 0 {
		c.IdleFor = 30 * time.Second
	}
	if c.Fallback <= 0 {
		c.Fallback = 10 * time.Second
	}
	if c.usage == nil {
		c.usage = cpuTime
	}
	if c.set == nil {
		c.set = func(n int) {
			if n <= 0 {
				runtime.SetDefaultGOMAXPROCS()
				return
			}
			runtime.GOMAXPROCS(n)
		}
	}
}

// governor is the decision, apart from clocks and the runtime.
type governor struct {
	cfg  Config
	one  bool          // running on one P
	idle time.Duration // how long every sample has been idle
}

// sample takes the CPU time used over an interval of length d and returns
// the P count to switch to: 1, Max (0 for the runtime's default), or -1 to
// stay.
func (g *governor) sample(used, d time.Duration) int {
	if d <= 0 {
		return -1
	}
	cores := used.Seconds() / d.Seconds()
	switch {
	case cores >= g.cfg.Busy:
		g.idle = 0
		if g.one {
			g.one = false
			return g.cfg.Max
		}
	case cores < g.cfg.Idle:
		g.idle += d
		if !g.one && g.idle >= g.cfg.IdleFor {
			g.one = true
			return 1
		}
	default:
		g.idle = 0
	}
	return -1
}

// Run governs GOMAXPROCS until ctx ends, then gives back the runtime's
// default (or Max). It returns the error of the first failed CPU-time read,
// leaving GOMAXPROCS as it found it.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	g := &governor{cfg: cfg}
	last, err := cfg.usage()
	if err != nil {
		return err
	}
	lastAt := time.Now()
	wait := cfg.Interval
	if cfg.Poke != nil {
		wait = cfg.Fallback
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	defer func() {
		if g.one {
			cfg.set(cfg.Max)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-cfg.Poke:
			if time.Since(lastAt) < cfg.Interval {
				continue
			}
		}
		now := time.Now()
		used, err := cfg.usage()
		if err != nil {
			return err
		}
		if n := g.sample(used-last, now.Sub(lastAt)); n >= 0 {
			cfg.set(n)
		}
		last, lastAt = used, now
		t.Reset(wait)
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
