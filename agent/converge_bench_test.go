package agent

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkConvergence starts N agents at once, each a full Agent (Serf
// with an encrypted keyring, lease logic, reconcile loop, state file, local
// API) without a WireGuard device, and reports the time until every agent
// holds a distinct block and every view agrees on every owner
// (converge-s). 200 agents gossip over loopback UDP/TCP; 1000 (without
// -short) in memory (memnet_test.go), which two cores can carry. Run with -benchtime 1x (make bench-agent).
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
	// A /14 of /24s: 1024 blocks, the hash claim rarely collides at 200.
	pool := LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/14"), BlockBits: 24, TTL: 10 * time.Minute}
	s := newSim(b, pool)
	if n >= 100 {
		s.profile = "crowded" // as in TestSimulationChurn
	}
	all := names("conv", 0, n)
	if inMemory {
		s.mem = &memNetwork{}
	}
	b.StartTimer()
	start := time.Now()
	for _, name := range all {
		s.start(name, 0, false)
	}
	waitUntil(b, 20*time.Minute, fmt.Sprintf("%d agents converged", n), func() error { return s.settled(all) })
	took := time.Since(start)
	b.StopTimer()
	s.stopAll(all)
	return took
}
