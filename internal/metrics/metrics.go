package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Type is a metric family's type as the text format names it.
type Type string

// The types weft exports.
const (
	CounterType   Type = "counter"
	GaugeType     Type = "gauge"
	HistogramType Type = "histogram"
)

// Registry holds metric families and writes them, sorted by name. Its
// methods are safe for concurrent use.
type Registry struct {
	mu   sync.Mutex
	fams map[string]family
}

// family is one metric family: it writes its samples (not its HELP and
// TYPE lines, which the registry writes).
type family interface {
	meta() (help string, typ Type)
	write(w *bufio.Writer, name string)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{fams: map[string]family{}} }

var (
	nameRe  = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// register adds f under name. A bad or duplicate name is a programming
// error (the names are constants in the code), so it panics, as
// prometheus.MustRegister does.
func (r *Registry) register(name string, f family) {
	if !nameRe.MatchString(name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", name))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.fams[name]; dup {
		panic(fmt.Sprintf("metrics: %s registered twice", name))
	}
	r.fams[name] = f
}

func checkLabel(label string) {
	if !labelRe.MatchString(label) || strings.HasPrefix(label, "__") || label == "le" {
		panic(fmt.Sprintf("metrics: invalid label name %q", label))
	}
}

// WriteTo writes every family in the text format.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	names := make([]string, 0, len(r.fams))
	for n := range r.fams {
		names = append(names, n)
	}
	fams := make([]family, 0, len(names))
	slices.Sort(names)
	for _, n := range names {
		fams = append(fams, r.fams[n])
	}
	r.mu.Unlock()
	cw := &countWriter{w: w}
	bw := bufio.NewWriter(cw)
	for i, f := range fams {
		help, typ := f.meta()
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", names[i], escapeHelp(help), names[i], typ)
		f.write(bw, names[i])
	}
	err := bw.Flush()
	return cw.n, err
}

// ServeHTTP serves the registry to a scraper.
func (r *Registry) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	r.WriteTo(w)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// floatBits is a float64 updated atomically.
type floatBits struct{ v atomic.Uint64 }

func (f *floatBits) load() float64   { return math.Float64frombits(f.v.Load()) }
func (f *floatBits) store(v float64) { f.v.Store(math.Float64bits(v)) }
func (f *floatBits) add(d float64) {
	for {
		old := f.v.Load()
		if f.v.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// scalar is one unlabelled sample, the state of a Counter or a Gauge.
type scalar struct {
	help string
	typ  Type
	v    floatBits
}

// Value is the current value.
func (s *scalar) Value() float64 { return s.v.load() }

func (s *scalar) meta() (string, Type) { return s.help, s.typ }
func (s *scalar) write(w *bufio.Writer, name string) {
	writeSample(w, name, "", "", s.v.load())
}

// Counter is a value that only goes up.
type Counter struct{ scalar }

// NewCounter registers a counter.
func (r *Registry) NewCounter(name, help string) *Counter {
	c := &Counter{scalar{help: help, typ: CounterType}}
	r.register(name, c)
	return c
}

// Inc adds one.
func (c *Counter) Inc() { c.v.add(1) }

// Add adds d; a negative d is ignored (a counter never goes down).
func (c *Counter) Add(d float64) {
	if d > 0 {
		c.v.add(d)
	}
}

// Gauge is a value that goes up and down.
type Gauge struct{ scalar }

// NewGauge registers a gauge.
func (r *Registry) NewGauge(name, help string) *Gauge {
	g := &Gauge{scalar{help: help, typ: GaugeType}}
	r.register(name, g)
	return g
}

// Set sets the gauge.
func (g *Gauge) Set(v float64) { g.v.store(v) }

// GaugeVec is a gauge per value of one label.
type GaugeVec struct {
	help, label string
	mu          sync.Mutex
	gauges      map[string]*Gauge
}

// NewGaugeVec registers a gauge vector with one label.
func (r *Registry) NewGaugeVec(name, help, label string) *GaugeVec {
	checkLabel(label)
	v := &GaugeVec{help: help, label: label, gauges: map[string]*Gauge{}}
	r.register(name, v)
	return v
}

// With is the gauge for one label value, created at first use.
func (v *GaugeVec) With(value string) *Gauge {
	v.mu.Lock()
	defer v.mu.Unlock()
	g, ok := v.gauges[value]
	if !ok {
		g = &Gauge{}
		v.gauges[value] = g
	}
	return g
}

func (v *GaugeVec) meta() (string, Type) { return v.help, GaugeType }
func (v *GaugeVec) write(w *bufio.Writer, name string) {
	v.mu.Lock()
	values := make([]string, 0, len(v.gauges))
	for lv := range v.gauges {
		values = append(values, lv)
	}
	slices.Sort(values)
	samples := make([]float64, len(values))
	for i, lv := range values {
		samples[i] = v.gauges[lv].v.load()
	}
	v.mu.Unlock()
	for i, lv := range values {
		writeSample(w, name, v.label, lv, samples[i])
	}
}

// Histogram counts observations in buckets.
type Histogram struct {
	help   string
	bounds []float64 // upper bounds, ascending, without +Inf
	counts []atomic.Uint64
	count  atomic.Uint64
	sum    floatBits
}

// NewHistogram registers a histogram with the given bucket upper bounds
// (ascending; +Inf is implied).
func (r *Registry) NewHistogram(name, help string, bounds []float64) *Histogram {
	if !slices.IsSorted(bounds) {
		panic(fmt.Sprintf("metrics: %s: bucket bounds not ascending", name))
	}
	h := &Histogram{help: help, bounds: slices.Clone(bounds), counts: make([]atomic.Uint64, len(bounds))}
	r.register(name, h)
	return h
}

// ExponentialBuckets returns n bounds: start, start×factor, start×factor², ….
func ExponentialBuckets(start, factor float64, n int) []float64 {
	b := make([]float64, n)
	for i := range b {
		b[i] = start
		start *= factor
	}
	return b
}

// Observe adds one observation.
func (h *Histogram) Observe(v float64) {
	// The first bound ≥ v ("le"); NaN goes only to +Inf.
	if i, _ := slices.BinarySearch(h.bounds, v); i < len(h.bounds) && !math.IsNaN(v) {
		h.counts[i].Add(1)
	}
	h.count.Add(1)
	h.sum.add(v)
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.count.Load() }

func (h *Histogram) meta() (string, Type) { return h.help, HistogramType }
func (h *Histogram) write(w *bufio.Writer, name string) {
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		writeSample(w, name+"_bucket", "le", formatFloat(b), float64(cum))
	}
	// Observations may land between the loads above and this one; the
	// +Inf bucket must equal _count and hold at least every finite bucket.
	n := max(h.count.Load(), cum)
	writeSample(w, name+"_bucket", "le", "+Inf", float64(n))
	writeSample(w, name+"_sum", "", "", h.sum.load())
	writeSample(w, name+"_count", "", "", float64(n))
}

// Func is a family whose samples are read at scrape time, one per value of
// one label (or a single sample with no label when label is "").
type Func struct {
	help, label string
	typ         Type
	read        func(emit func(labelValue string, v float64))
}

// NewFunc registers a family read at scrape time: read calls emit once per
// sample. Samples are written sorted by label value; a repeated label
// value keeps its first sample.
func (r *Registry) NewFunc(name, help string, typ Type, label string, read func(emit func(labelValue string, v float64))) {
	if label != "" {
		checkLabel(label)
	}
	if typ == HistogramType {
		panic("metrics: a Func cannot be a histogram")
	}
	r.register(name, &Func{help: help, label: label, typ: typ, read: read})
}

func (f *Func) meta() (string, Type) { return f.help, f.typ }
func (f *Func) write(w *bufio.Writer, name string) {
	type sample struct {
		lv string
		v  float64
	}
	var ss []sample
	seen := map[string]bool{}
	f.read(func(lv string, v float64) {
		if f.label == "" {
			lv = ""
		}
		if !seen[lv] {
			seen[lv] = true
			ss = append(ss, sample{lv, v})
		}
	})
	slices.SortFunc(ss, func(a, b sample) int { return strings.Compare(a.lv, b.lv) })
	for _, s := range ss {
		writeSample(w, name, f.label, s.lv, s.v)
	}
}

// writeSample writes one line: name{label="value"} v.
func writeSample(w *bufio.Writer, name, label, value string, v float64) {
	w.WriteString(name)
	if label != "" {
		w.WriteByte('{')
		w.WriteString(label)
		w.WriteString(`="`)
		w.WriteString(escapeLabel(value))
		w.WriteString(`"}`)
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// The text format escapes \ and newline in HELP, and also " in label values.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(strings.ToValidUTF8(s, "\uFFFD")) }
func escapeLabel(s string) string { return labelEscaper.Replace(strings.ToValidUTF8(s, "\uFFFD")) }
