package cni_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkParallelAdd measures ADD as a runtime sees it (libcni exec of
// the plugin, lease from the agent, address reservation, veth, routes)
// with 50 ADDs in flight on one node. Each op is one round of 50 parallel
// ADDs; the DELs between rounds are not timed. It reports the per-ADD
// latency p50 and p99 and the ADDs per second of a round. Run with
// `make bench-cni` or
//
//	go test -run=NONE -bench=ParallelAdd -benchtime=5x ./cni
func BenchmarkParallelAdd(b *testing.B) {
	nd := newLab(b, 1, 1)[0]
	list := nd.conflist("1.1.0")
	const n = 50
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = nd.newPodNS(fmt.Sprintf("b%d", i))
	}
	var lat []time.Duration
	var addTime time.Duration
	rounds := 0
	b.ResetTimer()
	for b.Loop() {
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := time.Now()
		for i, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				errs[i] = nd.add(p, list)
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}()
		}
		wg.Wait()
		addTime += time.Since(start)
		rounds++
		b.StopTimer()
		for i, err := range errs {
			if err != nil {
				b.Fatalf("ADD %s: %v", pods[i].name, err)
			}
		}
		for _, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := nd.del(p, list); err != nil {
					b.Errorf("DEL %s: %v", p.name, err)
				}
			}()
		}
		wg.Wait()
		b.StartTimer()
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(n*rounds)/addTime.Seconds(), "adds/s")
}

// BenchmarkAdd measures one ADD at a time (each op is one ADD; the DEL
// after it is not timed), reporting p50 and p99.
func BenchmarkAdd(b *testing.B) {
	nd := newLab(b, 1, 1)[0]
	list := nd.conflist("1.1.0")
	p := nd.newPodNS("b")
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := nd.add(p, list); err != nil {
			b.Fatalf("ADD: %v", err)
		}
		lat = append(lat, time.Since(t0))
		b.StopTimer()
		if err := nd.del(p, list); err != nil {
			b.Fatalf("DEL: %v", err)
		}
		b.StartTimer()
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
