package metrics

import (
	"bytes"
	"io"
	"math"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parse reads the registry's output with Prometheus' own text parser, as
// a scraper does.
func parse(t testing.TB, r *Registry) map[string]*dto.MetricFamily {
	t.Helper()
	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Prometheus cannot parse the output: %v\n%s", err, buf.String())
	}
	return fams
}

func TestTypesAndValues(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounter("weft_test_total", "A counter.")
	g := r.NewGauge("weft_test_gauge", "A gauge.")
	v := r.NewGaugeVec("weft_test_members", "By state.", "state")
	h := r.NewHistogram("weft_test_seconds", "A histogram.", ExponentialBuckets(0.001, 10, 3))
	c.Inc()
	c.Add(2.5)
	c.Add(-7) // ignored: counters never go down
	g.Set(-3)
	v.With("alive").Set(24)
	v.With("failed").Set(1)
	v.With("alive").Set(25)
	for _, o := range []float64{0.0005, 0.001, 0.05, 5, math.NaN()} {
		h.Observe(o)
	}
	fams := parse(t, r)

	if got := fams["weft_test_total"]; got.GetType() != dto.MetricType_COUNTER || got.Metric[0].Counter.GetValue() != 3.5 {
		t.Errorf("counter: %v", got)
	}
	if got := fams["weft_test_gauge"]; got.GetType() != dto.MetricType_GAUGE || got.Metric[0].Gauge.GetValue() != -3 {
		t.Errorf("gauge: %v", got)
	}
	vec := fams["weft_test_members"]
	want := map[string]float64{"alive": 25, "failed": 1}
	if len(vec.Metric) != len(want) {
		t.Fatalf("gauge vector: %v", vec)
	}
	for _, m := range vec.Metric {
		if l := m.Label[0]; l.GetName() != "state" || want[l.GetValue()] != m.Gauge.GetValue() {
			t.Errorf("gauge vector sample %v", m)
		}
	}
	hist := fams["weft_test_seconds"].Metric[0].Histogram
	if hist.GetSampleCount() != 5 {
		t.Errorf("histogram count %d, want 5", hist.GetSampleCount())
	}
	// le is inclusive; buckets are cumulative; NaN counts only in +Inf.
	wantCum := []uint64{2, 2, 3, 5} // ≤0.001, ≤0.01, ≤0.1, +Inf
	if len(hist.Bucket) != len(wantCum) {
		t.Fatalf("%d buckets, want %d", len(hist.Bucket), len(wantCum))
	}
	for i, b := range hist.Bucket {
		if b.GetCumulativeCount() != wantCum[i] {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), wantCum[i])
		}
	}
	if !math.IsNaN(hist.GetSampleSum()) {
		t.Errorf("sum %v: a NaN observation makes the sum NaN", hist.GetSampleSum())
	}
	if c.Value() != 3.5 || g.Value() != -3 || h.Count() != 5 {
		t.Errorf("Value/Count: %v %v %v", c.Value(), g.Value(), h.Count())
	}
}

func TestFuncSortedAndDeduplicated(t *testing.T) {
	r := NewRegistry()
	r.NewFunc("weft_test_peer_rx_bytes_total", "Read at scrape time.", CounterType, "peer", func(emit func(string, float64)) {
		emit("node-b", 2)
		emit("node-a", 1)
		emit("node-b", 99) // repeated: the first wins
	})
	var buf bytes.Buffer
	r.WriteTo(&buf)
	want := `# HELP weft_test_peer_rx_bytes_total Read at scrape time.
# TYPE weft_test_peer_rx_bytes_total counter
weft_test_peer_rx_bytes_total{peer="node-a"} 1
weft_test_peer_rx_bytes_total{peer="node-b"} 2
`
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestRegisterRejectsBadNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		reg  func(r *Registry)
	}{
		{"bad metric name", func(r *Registry) { r.NewGauge("weft-peers", "") }},
		{"duplicate", func(r *Registry) { r.NewGauge("weft_x", ""); r.NewCounter("weft_x", "") }},
		{"reserved label", func(r *Registry) { r.NewGaugeVec("weft_y", "", "le") }},
		{"bad label", func(r *Registry) { r.NewGaugeVec("weft_y", "", "a b") }},
		{"unsorted buckets", func(r *Registry) { r.NewHistogram("weft_z", "", []float64{2, 1}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("registered without a panic")
				}
			}()
			tc.reg(NewRegistry())
		})
	}
}

func TestServeHTTP(t *testing.T) {
	r := NewRegistry()
	r.NewCounter("weft_test_total", "x").Inc()
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), "weft_test_total 1\n") {
		t.Errorf("body:\n%s", body)
	}
}

func TestProcessSeries(t *testing.T) {
	r := NewRegistry()
	r.RegisterProcess()
	fams := parse(t, r)
	rss := fams["process_resident_memory_bytes"].GetMetric()[0].GetGauge().GetValue()
	var status []byte
	status, _ = os.ReadFile("/proc/self/status")
	if rss < 1<<20 || rss > 1<<32 {
		t.Errorf("process_resident_memory_bytes %v (status: %s)", rss, status)
	}
	start := fams["process_start_time_seconds"].GetMetric()[0].GetGauge().GetValue()
	if fi, err := os.Stat("/proc/self"); err == nil {
		// /proc/self's mtime is the process's start, to the second or so.
		if d := math.Abs(start - float64(fi.ModTime().UnixNano())/1e9); d > 5 {
			t.Errorf("process_start_time_seconds %v is %v s off /proc/self's time", start, d)
		}
	}
	for _, n := range []string{"process_cpu_seconds_total", "process_open_fds", "process_max_fds",
		"go_goroutines", "go_threads", "go_memstats_heap_alloc_bytes", "go_memstats_sys_bytes"} {
		f, ok := fams[n]
		if !ok || len(f.Metric) != 1 {
			t.Errorf("%s missing", n)
			continue
		}
		m := f.Metric[0]
		if v := m.GetGauge().GetValue() + m.GetCounter().GetValue(); v <= 0 && n != "process_cpu_seconds_total" {
			t.Errorf("%s = %v", n, v)
		}
	}
	// The GC series follow the runtime: a forced collection counts.
	before := fams["go_memstats_gc_cycles_total"].GetMetric()[0].GetCounter().GetValue()
	runtime.GC()
	if after := parse(t, r)["go_memstats_gc_cycles_total"].GetMetric()[0].GetCounter().GetValue(); after < before+1 {
		t.Errorf("go_memstats_gc_cycles_total %v after runtime.GC, was %v", after, before)
	}
	// GOMAXPROCS as it is now, not as it was at registration.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, n := range []int{1, 3} {
		runtime.GOMAXPROCS(n)
		if f := parse(t, r)["go_sched_gomaxprocs_threads"]; f == nil || f.GetMetric()[0].GetGauge().GetValue() != float64(n) {
			t.Errorf("go_sched_gomaxprocs_threads at GOMAXPROCS %d: %v", n, f)
		}
	}
	if v := fams["go_info"].GetMetric()[0].GetLabel()[0].GetValue(); !strings.HasPrefix(v, "go") {
		t.Errorf("go_info version %q", v)
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses.
	line := "4243 (we ft) (x) S 1 4243 4243 0 -1 4194560 3174 0 0 0 150 37 0 0 20 0 9 0 1365427 1330241536 6071 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0\n"
	st, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.utime != 150 || st.stime != 37 || st.starttime != 1365427 || st.vsize != 1330241536 || st.rss != 6071 {
		t.Errorf("%+v", st)
	}
	for _, bad := range []string{"", "4243 (weft S 1", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s 0 0 20 0 9 0 1 2 3"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// FuzzLabelAndHelp: any label value and help text gives output that
// Prometheus parses back to the same value.
func FuzzLabelAndHelp(f *testing.F) {
	f.Add("node-a", "Bytes received.")
	f.Add(`a"b\c`+"\n", "line\\one\nline two")
	f.Add("\xff\xfe", "\x00")
	f.Fuzz(func(t *testing.T, value, help string) {
		r := NewRegistry()
		r.NewFunc("weft_fuzz", help, GaugeType, "peer", func(emit func(string, float64)) { emit(value, 1) })
		fams := parse(t, r)
		got := fams["weft_fuzz"]
		wantValue := strings.ToValidUTF8(value, "\uFFFD")
		if l := got.GetMetric()[0].GetLabel()[0].GetValue(); l != wantValue {
			t.Errorf("label value %q, want %q", l, wantValue)
		}
	})
}
