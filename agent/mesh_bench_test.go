package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/api"
)

// BenchmarkMesh25 runs 25 real `weft agent` processes, one per lab node
// (tun mode, real WireGuard handshakes over the lab underlay), and reports
// what the agent issue asks of a 25-member mesh:
//
//   - join-handshake-s: from the start of the 25th agent's process until
//     every other agent has a handshake with it (goal < 2 s);
//   - idle-rss-MiB: resident memory of the largest idle agent (goal ≤ 25 MiB);
//   - idle-millicores: CPU of an idle agent over 60 s, mean and max over
//     all 25 (goal ≤ 2).
//
// make bench-agent runs it: go test -run '^$' -bench Mesh25 -benchtime 1x ./agent/
func BenchmarkMesh25(b *testing.B) {
	const n = 25
	lab := needLab(b, n)
	key := writeGossipKey(b)
	var ps []*agentProc
	var names []string
	// As deployed: the lab's agents log at debug, for tests that fail.
	info := []string{"--log-level", "info"}
	for i := 0; i < n-1; i++ {
		var join = lab.Nodes[0]
		if i == 0 {
			join = nil
		}
		ps = append(ps, startAgent(b, lab, lab.Nodes[i], key, join, info...))
		names = append(names, lab.Nodes[i].Name)
	}
	eventually(b, 3*time.Minute, "24 agents meshed", func() error {
		for _, p := range ps {
			if err := meshed(p, names...); err != nil {
				return err
			}
		}
		return nil
	})

	for i := 0; i < b.N; i++ {
		b.StopTimer()
		newcomer := lab.Nodes[n-1]
		start := time.Now()
		b.StartTimer()
		p := startAgent(b, lab, newcomer, key, lab.Nodes[0], info...)
		var last time.Time
		eventually(b, 2*time.Minute, "every peer handshaked with the newcomer", func() error {
			last = time.Time{}
			for _, q := range ps {
				st, err := q.status()
				if err != nil {
					return err
				}
				i := slices.IndexFunc(st.Members, func(m agentMember) bool { return m.Name == newcomer.Name })
				if i < 0 || st.Members[i].Peer == nil || st.Members[i].Peer.LastHandshake.Before(start) {
					return fmt.Errorf("%s has no handshake with %s yet", q.node.Name, newcomer.Name)
				}
				if h := st.Members[i].Peer.LastHandshake; h.After(last) {
					last = h
				}
			}
			return nil
		})
		b.StopTimer()
		b.ReportMetric(last.Sub(start).Seconds(), "join-handshake-s")
		if i < b.N-1 {
			p.stop(sigterm)
			continue
		}
		ps = append(ps, p)
	}

	// Idle: let the last join's gossip and reconcile passes settle.
	time.Sleep(30 * time.Second)
	const window = 60 * time.Second
	before := make([]float64, len(ps))
	schedBefore := make([]time.Duration, len(ps))
	switchesBefore := make([]int, len(ps))
	for i, p := range ps {
		before[i] = cpuSeconds(b, p.Pid())
		schedBefore[i], switchesBefore[i] = threadStats(b, p.Pid())
	}
	// WEFT_BENCH_PROFILES=dir keeps Go's profiles of every agent over the
	// window (an idle agent gives a 100 Hz profile a sample every few
	// seconds: `go tool pprof dir/*.cpu.pb.gz` merges them) and their heap
	// profiles after it. Profiling costs the agents some CPU.
	var profiled sync.WaitGroup
	if dir := os.Getenv("WEFT_BENCH_PROFILES"); dir != "" {
		for _, p := range ps {
			profiled.Add(1)
			go func() {
				defer profiled.Done()
				saveProfile(b, p, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(window.Seconds())-2), filepath.Join(dir, p.node.Name+".cpu.pb.gz"))
			}()
		}
	}
	time.Sleep(window)
	profiled.Wait()
	if dir := os.Getenv("WEFT_BENCH_PROFILES"); dir != "" {
		for _, p := range ps {
			saveProfile(b, p, "/debug/pprof/heap", filepath.Join(dir, p.node.Name+".heap.pb.gz"))
			saveProfile(b, p, "/debug/pprof/goroutine?debug=1", filepath.Join(dir, p.node.Name+".goroutines.txt"))
		}
		// And an execution trace of the first and the last agent: every
		// wakeup of an idle agent, with its stack (go tool trace).
		for _, p := range []*agentProc{ps[0], ps[len(ps)-1]} {
			saveProfile(b, p, "/debug/pprof/trace?seconds=20", filepath.Join(dir, p.node.Name+".trace"))
		}
	}
	var sum, worst float64
	var largest map[string]float64
	var largestProc *agentProc
	var rss, pss, pssAnon []float64
	rssOf := map[*agentProc]float64{}
	for i, p := range ps {
		mc := (cpuSeconds(b, p.Pid()) - before[i]) / window.Seconds() * 1000
		onCPU, switches := threadStats(b, p.Pid())
		schedMC := (onCPU - schedBefore[i]).Seconds() / window.Seconds() * 1000
		perSec := float64(switches-switchesBefore[i]) / window.Seconds()
		sum += mc
		worst = max(worst, mc)
		m := memMiB(b, p.Pid())
		if m["VmRSS"] > largest["VmRSS"] {
			largest, largestProc = m, p
		}
		rss = append(rss, m["VmRSS"])
		rssOf[p] = m["VmRSS"]
		// Printed, not logged: a benchmark's log keeps its first ten lines.
		fmt.Printf("%s: %.1f millicores (%.2f by schedstat, %.0f thread wakeups/s), RSS %.1f MiB (anon %.1f, file %.1f), PSS %.1f MiB (anon %.1f), %.0f threads, GOMAXPROCS %s\n", p.node.Name, mc, schedMC, perSec, m["VmRSS"], m["RssAnon"], m["RssFile"], m["Pss"], m["Pss_Anon"], m["Threads"], gomaxprocs(p))
		pss = append(pss, m["Pss"])
		pssAnon = append(pssAnon, m["Pss_Anon"])
	}
	slices.Sort(rss)
	b.Logf("%s, the largest: %s", largestProc.node.Name, heapSummary(largestProc))
	if i := slices.IndexFunc(ps, func(p *agentProc) bool { return rssOf[p] == rss[len(rss)/2] }); i >= 0 {
		b.Logf("%s, a median one: %s", ps[i].node.Name, heapSummary(ps[i]))
	}
	b.ReportMetric(sum/float64(len(ps)), "idle-millicores")
	b.ReportMetric(worst, "idle-millicores-max")
	b.ReportMetric(largest["VmRSS"], "idle-rss-MiB")
	b.ReportMetric(rss[len(rss)/2], "idle-rss-median-MiB")
	// The largest agent's RSS split: its own memory, and the pages of the
	// binary it has mapped (shared with other processes of that binary).
	b.ReportMetric(largest["RssAnon"], "idle-rss-anon-MiB")
	b.ReportMetric(largest["RssFile"], "idle-rss-file-MiB")
	// PSS charges each shared page (the binary's text, mapped by all 25
	// agents) to its sharers in equal parts: the memory one more agent
	// really costs the node.
	slices.Sort(pss)
	slices.Sort(pssAnon)
	b.ReportMetric(pss[len(pss)/2], "idle-pss-median-MiB")
	b.ReportMetric(pss[len(pss)-1], "idle-pss-max-MiB")
	b.ReportMetric(pssAnon[len(pssAnon)-1], "idle-pss-anon-max-MiB")
}

// cpuSeconds is the user+system CPU time of a process, from /proc.
func cpuSeconds(tb testing.TB, pid int) float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The command name may hold spaces; the fields after it are fixed.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

// threadStats sums over a process's threads their time on a CPU (from
// schedstat, in ns: finer than stat's 10 ms ticks) and their context
// switches (each wakeup of a sleeping thread is one).
func threadStats(tb testing.TB, pid int) (onCPU time.Duration, switches int) {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("threads of %d: %v", pid, err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(t, "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		ns, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
		if err != nil {
			tb.Fatalf("%s/schedstat: %q", t, b)
		}
		onCPU += time.Duration(ns)
		b, _ = os.ReadFile(filepath.Join(t, "status"))
		st := statusFields(b)
		for _, k := range []string{"voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"} {
			n, _ := strconv.Atoi(st[k])
			switches += n
		}
	}
	return onCPU, switches
}

// statusFields splits a /proc status file into its "key: value" fields.
func statusFields(b []byte) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// memMiB reads a process's VmRSS, RssAnon and RssFile, in MiB, and its
// thread count (Threads), from /proc/PID/status, and its Pss and Pss_Anon
// from /proc/PID/smaps_rollup.
func memMiB(tb testing.TB, pid int) map[string]float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	st := statusFields(b)
	m := map[string]float64{}
	for _, k := range []string{"Threads", "VmRSS", "RssAnon", "RssFile"} {
		v, ok := st[k]
		if !ok {
			tb.Fatalf("/proc/%d/status: no %s, want VmRSS, RssAnon, RssFile, Threads", pid, k)
		}
		n, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64)
		if err != nil {
			tb.Fatalf("%s %q: %v", k, v, err)
		}
		if k != "Threads" {
			n /= 1024 // kB
		}
		m[k] = n
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		tb.Fatal(err)
	}
	st = statusFields(b)
	for _, k := range []string{"Pss", "Pss_Anon"} {
		v, ok := st[k]
		if !ok {
			tb.Fatalf("/proc/%d/smaps_rollup: no %s", pid, k)
		}
		n, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64)
		if err != nil {
			tb.Fatalf("%s %q: %v", k, v, err)
		}
		m[k] = n / 1024
	}
	return m
}

type agentMember = api.MemberReport

const sigterm = syscall.SIGTERM

// heapSummary is the Go runtime's own account of an agent's memory, from
// its local API's /debug/pprof/heap, with where it is in its collection
// cycle (HeapAlloc against NextGC, the age of the last collection) and its
// goroutine count.
func heapSummary(p *agentProc) string {
	var out []string
	for _, l := range strings.Split(p.Get("/debug/pprof/heap?debug=1"), "\n") {
		for _, k := range []string{"HeapAlloc", "NextGC", "HeapInuse", "HeapIdle", "HeapReleased", "Stack", "GCSys", "OtherSys", "NumGC"} {
			if strings.HasPrefix(l, "# "+k+" = ") {
				out = append(out, strings.TrimPrefix(l, "# "))
			}
		}
		if v, ok := strings.CutPrefix(l, "# LastGC = "); ok {
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
				out = append(out, fmt.Sprintf("last GC %v ago", time.Since(time.Unix(0, ns)).Round(time.Second)))
			}
		}
	}
	g, _, _ := strings.Cut(p.Get("/debug/pprof/goroutine?debug=1"), "\n")
	out = append(out, strings.TrimPrefix(g, "goroutine profile: "))
	return strings.Join(out, ", ")
}

// gomaxprocs is an agent's GOMAXPROCS now, from its /metrics (the
// governor, internal/procs, lowers it to 1 while the agent idles).
func gomaxprocs(p *agentProc) string {
	for _, l := range strings.Split(p.metrics(), "\n") {
		if v, ok := strings.CutPrefix(l, "go_sched_gomaxprocs_threads "); ok {
			return v
		}
	}
	return "?"
}

// saveProfile writes what an agent's local API serves at path (a Go
// profile) to file.
func saveProfile(tb testing.TB, p *agentProc, path, file string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := api.NewClient(p.Socket())
	c.HTTP.Timeout = 0 // a CPU profile takes its seconds
	b, err := c.Get(ctx, path)
	if err == nil {
		err = os.WriteFile(file, b, 0o644)
	}
	if err != nil {
		tb.Errorf("%s %s: %v", p.node.Name, path, err)
		return
	}
}
