package agent

import (
	"fmt"
	"net/netip"
	"os"
	"runtime/debug"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/plan"
)

// BenchmarkConvergence starts N agents at once, each a full Agent (Serf
// with an encrypted keyring, lease logic, reconcile loop, state file, local
// API) without a WireGuard device, and reports the time until every agent
// holds a distinct block and every agent's last reconcile pass, what it
// applied, agrees on every owner (converge-s). 200 agents gossip over
// loopback UDP/TCP; 1000 (without -short) in memory (memnet_test.go),
// which two cores can carry. Run with -benchtime 1x (make bench-agent).
func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{200, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			if n > 200 && testing.Short() {
				b.Skip("1000 agents: runs without -short")
			}
			var total time.Duration
			for i := 0; i < b.N; i++ {
				total += convergeOnce(b, n, n > 200)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "converge-s")
		})
	}
}

func convergeOnce(b *testing.B, n int, inMemory bool) time.Duration {
	b.StopTimer()
	// /24 blocks, at least 4n of them (a /14 at 200, a /12 at 1000), as
	// an operator sizes a pool with room to grow: in a nearly full pool
	// most hash claims collide and the benchmark would measure that.
	bits := 14
	for 1<<(24-bits) < 4*n {
		bits--
	}
	pool := plan.LeaseConfig{Range: netip.PrefixFrom(netip.MustParseAddr("100.64.0.0"), bits), BlockBits: 24, TTL: 10 * time.Minute}
	s := newSim(b, pool)
	if n >= 100 {
		s.crowded = true // as in TestSimulationChurn
		// Beyond 200 agents on two cores, in slow motion: gossip rounds
		// and probes 5× apart at 1000 (crowdedTimings).
		s.stretch = n / 200
	}
	s.resync = 30 * time.Second // the default: no lease TTL to wait out here
	all := names("conv", 0, n)
	if inMemory {
		s.mem = &memNetwork{}
		// 1000 agents hold 1000 views of 1000 members in one heap: at
		// GOGC=100 the collector took half of the two cores in a profile,
		// starving probes into false failure verdicts. The agents' own
		// processes each collect a heap of one view. The live heap of
		// the 1000 was 5.1 GB three minutes in; the limit keeps the run
		// inside 24 GiB. With it, marking and assists still took ~25 % of
		// a 40-minute run.
		defer debug.SetGCPercent(debug.SetGCPercent(400))
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(18 << 30))
	}
	b.StartTimer()
	start := time.Now()
	for _, name := range all {
		s.start(name, 0, false)
	}
	stop := make(chan struct{})
	defer close(stop)
	if os.Getenv("WEFT_SIM_TRACE") != "" {
		// Progress apart from the check, which must stay cheap to poll.
		go func() {
			t := time.NewTicker(time.Minute)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					fmt.Fprintf(os.Stderr, "after %v: %s\n", time.Since(start).Round(time.Second), s.summary(all))
				}
			}
		}()
	}
	waitUntil(b, convWait(b), fmt.Sprintf("%d agents converged", n), func() error { return s.applied(all) })
	took := time.Since(start)
	b.StopTimer()
	s.stopAll(all)
	return took
}

// convWait is how long convergeOnce waits: $WEFT_CONV_WAIT (a Go
// duration) or 20 minutes.
func convWait(b *testing.B) time.Duration {
	v := os.Getenv("WEFT_CONV_WAIT")
	if v == "" {
		return 20 * time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("WEFT_CONV_WAIT=%q: want a positive Go duration such as 40m", v)
	}
	return d
}
