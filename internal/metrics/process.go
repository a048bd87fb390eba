package metrics

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"syscall"
)

// RegisterProcess registers the standard process_* and go_* series (the
// names Prometheus' own client exports), read at scrape time, so that what
// the process itself costs is visible next to what it does.
func (r *Registry) RegisterProcess() {
	single := func(f func() float64) func(func(string, float64)) {
		return func(emit func(string, float64)) { emit("", f()) }
	}
	stat := func(f func(procStat) float64) func(func(string, float64)) {
		return func(emit func(string, float64)) {
			if st, err := readProcStat(); err == nil {
				emit("", f(st))
			}
		}
	}
	r.NewFunc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", CounterType, "",
		stat(func(s procStat) float64 { return float64(s.utime+s.stime) / clockTicks }))
	r.NewFunc("process_resident_memory_bytes", "Resident memory size in bytes.", GaugeType, "",
		stat(func(s procStat) float64 { return float64(s.rss * int64(os.Getpagesize())) }))
	r.NewFunc("process_virtual_memory_bytes", "Virtual memory size in bytes.", GaugeType, "",
		stat(func(s procStat) float64 { return float64(s.vsize) }))
	r.NewFunc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", GaugeType, "",
		func(emit func(string, float64)) {
			st, err := readProcStat()
			bt, berr := bootTime()
			if err == nil && berr == nil {
				emit("", bt+float64(st.starttime)/clockTicks)
			}
		})
	r.NewFunc("process_open_fds", "Number of open file descriptors.", GaugeType, "",
		func(emit func(string, float64)) {
			if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
				emit("", float64(len(ents)))
			}
		})
	r.NewFunc("process_max_fds", "Maximum number of open file descriptors.", GaugeType, "",
		func(emit func(string, float64)) {
			var l syscall.Rlimit
			if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil {
				emit("", float64(l.Cur))
			}
		})
	r.NewFunc("go_goroutines", "Number of goroutines that currently exist.", GaugeType, "",
		single(func() float64 { return float64(runtime.NumGoroutine()) }))
	r.NewFunc("go_threads", "Number of OS threads created.", GaugeType, "",
		single(func() float64 { n, _ := runtime.ThreadCreateProfile(nil); return float64(n) }))
	r.NewFunc("go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting (weft agent lowers it to 1 while idle).", GaugeType, "",
		single(func() float64 { return float64(runtime.GOMAXPROCS(0)) }))
	r.NewFunc("go_info", "Information about the Go environment.", GaugeType, "version",
		func(emit func(string, float64)) { emit(runtime.Version(), 1) })
	// runtime/metrics, not ReadMemStats: that stops the world, and would
	// once per series per scrape. Each series is the sum of its samples,
	// as the runtime/metrics documentation maps MemStats' fields.
	memFunc := func(name, help string, typ Type, samples ...string) {
		r.NewFunc(name, help, typ, "", func(emit func(string, float64)) {
			s := make([]rtmetrics.Sample, len(samples))
			for i, n := range samples {
				s[i].Name = n
			}
			rtmetrics.Read(s)
			var v uint64
			for _, x := range s {
				v += x.Value.Uint64()
			}
			emit("", float64(v))
		})
	}
	memFunc("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and still in use.", GaugeType,
		"/memory/classes/heap/objects:bytes")
	memFunc("go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", GaugeType,
		"/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes")
	memFunc("go_memstats_sys_bytes", "Number of bytes obtained from system.", GaugeType,
		"/memory/classes/total:bytes")
	memFunc("go_memstats_gc_cycles_total", "Number of completed GC cycles.", CounterType,
		"/gc/cycles/total:gc-cycles")
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// procStat is what the process series read from /proc/self/stat.
type procStat struct {
	utime, stime, starttime uint64
	vsize                   uint64
	rss                     int64 // pages
}

func readProcStat() (procStat, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

// parseProcStat reads proc(5)'s stat line. The command name (field 2) is in
// parentheses and may hold spaces and parentheses, so fields are counted
// from the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("metrics: /proc/self/stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 22 {
		return procStat{}, fmt.Errorf("metrics: /proc/self/stat: %d fields after the name, want ≥ 22", len(f))
	}
	var st procStat
	var errs [5]error
	st.utime, errs[0] = strconv.ParseUint(f[14-3], 10, 64)
	st.stime, errs[1] = strconv.ParseUint(f[15-3], 10, 64)
	st.starttime, errs[2] = strconv.ParseUint(f[22-3], 10, 64)
	st.vsize, errs[3] = strconv.ParseUint(f[23-3], 10, 64)
	st.rss, errs[4] = strconv.ParseInt(f[24-3], 10, 64)
	for _, err := range errs {
		if err != nil {
			return procStat{}, fmt.Errorf("metrics: /proc/self/stat: %w", err)
		}
	}
	return st, nil
}

// bootTime is the machine's boot time (btime in /proc/stat), Unix seconds.
func bootTime() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metrics: /proc/stat: no btime")
}
