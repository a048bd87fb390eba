package procs

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestGovernorSample(t *testing.T) {
	ms := time.Millisecond
	cfg := Config{Interval: time.Second, Busy: 0.1, Idle: 0.02, IdleFor: 3 * time.Second, Max: 4}
	type step struct {
		used time.Duration // CPU time over a 1 s sample
		want int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"idle for IdleFor: one P, once", []step{{3 * ms, -1}, {3 * ms, -1}, {3 * ms, 1}, {3 * ms, -1}}},
		{"busy on one P: Max at once", []step{{ms, -1}, {ms, -1}, {ms, 1}, {100 * ms, 4}, {900 * ms, -1}}},
		{"between the thresholds restarts the idle count", []step{{ms, -1}, {ms, -1}, {50 * ms, -1}, {ms, -1}, {ms, -1}, {ms, 1}}},
		{"busy while on Max: stays", []step{{500 * ms, -1}, {500 * ms, -1}}},
		{"busy restarts the idle count", []step{{ms, -1}, {ms, -1}, {ms, 1}, {200 * ms, 4}, {ms, -1}, {ms, -1}, {ms, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &governor{cfg: cfg}
			for i, s := range tc.steps {
				if got := g.sample(s.used, time.Second); got != s.want {
					t.Fatalf("sample %d (%v of CPU in 1 s): %d, want %d", i, s.used, got, s.want)
				}
			}
		})
	}
	if got := (&governor{cfg: cfg}).sample(time.Second, 0); got != -1 {
		t.Errorf("an empty interval: %d, want -1 (stay)", got)
	}
}

// TestRunFollowsRealLoad runs the governor on this process: idle, it drops
// to one P; a goroutine spinning makes it switch to Max within a sample; at
// the end it gives Max back.
func TestRunFollowsRealLoad(t *testing.T) {
	followsRealLoad(t, Config{Interval: 50 * time.Millisecond})
}

// The same, sampling only on pokes (the agent's probes): the fallback
// timer is far beyond the test.
func TestRunFollowsRealLoadOnPokes(t *testing.T) {
	poke := make(chan struct{})
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case <-stop:
				return
			case poke <- struct{}{}:
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	followsRealLoad(t, Config{Interval: 50 * time.Millisecond, Poke: poke, Fallback: time.Hour})
}

// With a poke source that never pokes, the fallback timer samples.
func TestRunFallsBackWithoutPokes(t *testing.T) {
	followsRealLoad(t, Config{Interval: time.Hour, Poke: make(chan struct{}), Fallback: 50 * time.Millisecond})
}

func followsRealLoad(t *testing.T, cfg Config) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	const max = 3
	runtime.GOMAXPROCS(max)
	cfg.IdleFor, cfg.Max = 250*time.Millisecond, max
	// Thresholds with room on both sides: the pokes alone (a wakeup every
	// 20 ms, and one of Run's) cost a VM 0.3-0.8 ms of CPU per 50 ms
	// interval, close to the default idle mark of 0.02 cores, so a test
	// at the defaults failed on a slower VM with the code unchanged. A
	// spinning goroutine uses about one core.
	cfg.Idle, cfg.Busy = 0.1, 0.3
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg)
	}()
	waitProcs := func(want int, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for runtime.GOMAXPROCS(0) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOMAXPROCS %d, want %d", what, runtime.GOMAXPROCS(0), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitProcs(1, "idle")

	var stop atomic.Bool
	spun := make(chan struct{})
	go func() {
		defer close(spun)
		for end := time.Now().Add(10 * time.Second); !stop.Load() && time.Now().Before(end); {
		}
	}()
	waitProcs(max, "spinning")
	stop.Store(true)
	<-spun
	waitProcs(1, "idle again")

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != max {
		t.Errorf("after Run: GOMAXPROCS %d, want %d back", got, max)
	}
}

func TestRunStopsOnUsageError(t *testing.T) {
	calls := 0
	errRead := errors.New("no rusage")
	cfg := Config{Interval: time.Millisecond, usage: func() (time.Duration, error) {
		if calls++; calls > 2 {
			return 0, errRead
		}
		return 0, nil
	}, set: func(int) { t.Error("set called without a decision") }}
	if err := Run(context.Background(), cfg); !errors.Is(err, errRead) {
		t.Fatalf("Run: %v, want %v", err, errRead)
	}
}
