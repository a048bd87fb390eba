package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/tunnel"
)

// Options says what to measure.
type Options struct {
	// Modes are the weft backends to measure: kernel, tun, netstack. Kernel
	// is probed in a lab node first and reported unavailable without the
	// module.
	Modes []tunnel.Mode
	// Streams are the parallel TCP stream counts, e.g. 1 and 4.
	Streams []int
	// Duration of each throughput run.
	Duration time.Duration
	// Weft is the weft binary. With it, kernel and tun are measured pod to
	// pod: a `weft agent` per node and a pod on each added through the CNI
	// plugin, as in a cluster. Without it they are measured node to node
	// between two devices of this process.
	Weft string
	// Sidecar also measures an app behind an unprivileged `weft sidecar`
	// reaching a host-mode pod (needs Weft): SidecarPair.
	Sidecar bool
	// NodeToNode also measures tun node to node with one `weft tunnel up`
	// process per node (needs Weft), the path of earlier releases' figures.
	NodeToNode bool
	// Stock is the path of a stock wireguard-go binary to measure in the same
	// run (node to node); empty skips it.
	Stock string
	// MTU of the underlay; the tunnels get MTU-80.
	MTU    int
	Logger *slog.Logger
	// Progress, if set, gets one line per finished measurement.
	Progress io.Writer
}

// The paths a result can be measured over.
const (
	PathPodToPod   = "pod-to-pod"
	PathNodeToNode = "node-to-node"
)

// Result is one row of the report.
type Result struct {
	Mode    string  `json:"mode"`
	Streams int     `json:"streams"`
	Gbps    float64 `json:"gbps"`
	RTTus   float64 `json:"rtt_us"`
	// Path is pod-to-pod or node-to-node (the underlay, netstack, stock).
	Path string `json:"path,omitempty"`
	// Tool is what measured it: iperf3, or the built-in Go sender ("go").
	Tool string `json:"tool"`
	// Ratio is Gbps over the underlay's Gbps with the same streams.
	Ratio float64 `json:"ratio"`
	// CPUSecPerGB is the CPU the tunnel processes spent per GB moved (user +
	// system, both ends together; softirq time in the kernel is not in it);
	// 0 where not measured.
	CPUSecPerGB float64 `json:"cpu_s_per_gb,omitempty"`
	// Unavailable says why the mode could not be measured on this machine;
	// the figures are then zero.
	Unavailable string `json:"unavailable,omitempty"`
}

// Report is the whole run.
type Report struct {
	Results []Result `json:"results"`
	Machine string   `json:"machine"`
}

// Run builds a two-node lab and measures each path in turn.
func Run(ctx context.Context, o Options) (Report, error) {
	o.setDefaults()
	lab, err := netlab.New(ctx, netlab.Config{Nodes: 2, MTU: o.MTU, Logger: o.Logger})
	if err != nil {
		return Report{}, err
	}
	defer lab.Close()

	r := &runner{o: o, lab: lab, rep: Report{Machine: machine()}, base: map[int]float64{}}
	if err := r.measure(ctx, Underlay(lab), PathNodeToNode); err != nil {
		return r.rep, err
	}
	if err := r.modes(ctx); err != nil {
		return r.rep, err
	}
	return r.rep, r.extras(ctx)
}

// setDefaults fills in the zero fields of o.
func (o *Options) setDefaults() {
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.Duration == 0 {
		o.Duration = 5 * time.Second
	}
	if len(o.Streams) == 0 {
		o.Streams = []int{1, 4}
	}
	if len(o.Modes) == 0 {
		o.Modes = []tunnel.Mode{tunnel.ModeKernel, tunnel.ModeTUN, tunnel.ModeNetstack}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// runner is one Run: its lab, the report so far, and the underlay's
// throughput per stream count, which later results are compared with.
type runner struct {
	o    Options
	lab  *netlab.Lab
	rep  Report
	base map[int]float64
}

// modes measures each of the weft backends o.Modes names, pod to pod
// where it can (kernel and tun with a weft binary), node to node
// otherwise.
func (r *runner) modes(ctx context.Context) error {
	for _, m := range r.o.Modes {
		if m == tunnel.ModeKernel {
			// Probe inside a lab node: the root namespace is not ours to
			// create links in.
			if err := r.lab.Nodes[0].Do(tunnel.ProbeKernel); err != nil {
				r.unavailable("weft-kernel", PathPodToPod, err.Error())
				continue
			}
		}
		var p *Path
		var err error
		path := PathPodToPod
		if m != tunnel.ModeNetstack && r.o.Weft != "" {
			p, err = PodPair(ctx, r.lab, r.o.Weft, m)
		} else {
			// netstack: pods cannot be wired to a userspace stack, and the
			// Go sender must live in this process, which holds the stack.
			path = PathNodeToNode
			p, _, err = WeftPair(ctx, r.lab, m, r.o.MTU-tunnel.Overhead, r.o.Logger)
		}
		if err := r.run(ctx, p, path, err); err != nil {
			return err
		}
	}
	return nil
}

// extras measures what o asks for besides the modes: the sidecar, tun
// node to node as a process, stock wireguard-go.
func (r *runner) extras(ctx context.Context) error {
	o := r.o
	if o.Sidecar && o.Weft != "" {
		p, err := SidecarPair(ctx, r.lab, o.Weft)
		if err := r.run(ctx, p, PathSidecar, err); err != nil {
			return err
		}
	}
	if o.NodeToNode && o.Weft != "" {
		p, err := ProcessPair(ctx, r.lab, o.Weft, tunnel.ModeTUN, o.MTU-tunnel.Overhead)
		if p != nil {
			p.Name = "weft-tun-process"
		}
		if err := r.run(ctx, p, PathNodeToNode, err); err != nil {
			return err
		}
	}
	if o.Stock != "" {
		p, err := StockPair(ctx, r.lab, o.Stock, o.MTU-tunnel.Overhead)
		if err := r.run(ctx, p, PathNodeToNode, err); err != nil {
			return err
		}
	}
	return nil
}

// run measures p, set up with err, and closes it.
func (r *runner) run(ctx context.Context, p *Path, path string, err error) error {
	if err != nil {
		return err
	}
	err = r.measure(ctx, p, path)
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	return err
}

// unavailable records mode as not measurable here, for why.
func (r *runner) unavailable(mode, path, why string) {
	for _, s := range r.o.Streams {
		r.rep.Results = append(r.rep.Results, Result{Mode: mode, Path: path, Streams: s, Unavailable: why})
	}
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, "%-14s unavailable: %s\n", mode, why)
	}
}

// measure takes p's round-trip time, then its throughput with each
// stream count, a result each.
func (r *runner) measure(ctx context.Context, p *Path, path string) error {
	rttOf := Ping
	if p.rtt != nil {
		rttOf = func(ctx context.Context, _ *Path) (float64, error) { return p.rtt(ctx) }
	}
	rtt, err := rttOf(ctx, p)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	for _, s := range r.o.Streams {
		res, err := r.streams(ctx, p, path, s)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
		res.RTTus = rtt
		r.rep.Results = append(r.rep.Results, res)
		if r.o.Progress != nil {
			fmt.Fprintf(r.o.Progress, "%-14s %-12s %d stream(s): %6.2f Gbit/s, RTT %.0f µs\n", res.Mode, res.Path, s, res.Gbps, res.RTTus)
		}
	}
	return nil
}

// streams measures p's throughput with s parallel streams, with iperf3
// where it can run, the Go sender otherwise, and the CPU the tunnel spent.
func (r *runner) streams(ctx context.Context, p *Path, path string, s int) (Result, error) {
	cpu := p.cpu
	if cpu == nil {
		cpu = func() time.Duration { return 0 }
	}
	before := cpu()
	start := time.Now()
	var th Throughput
	var err error
	useGo := p.A.Stack != nil || !HaveIperf3()
	if useGo {
		th, err = GoThroughput(ctx, p, s, r.o.Duration)
	} else {
		bind := p.B.Addr
		if p.B.Bind.IsValid() {
			bind = p.B.Bind
		}
		th, err = iperf3Bind(ctx, p.A.Node, p.B.Node, p.B.Addr, bind, s, r.o.Duration)
	}
	if err != nil {
		return Result{}, err
	}
	res := Result{Mode: p.Name, Path: path, Streams: s, Gbps: th.Gbps, Tool: "iperf3"}
	if useGo {
		res.Tool = "go"
	}
	if used := cpu() - before; used > 0 && th.Gbps > 0 {
		gb := th.Gbps / 8 * min(r.o.Duration, time.Since(start)).Seconds()
		res.CPUSecPerGB = used.Seconds() / gb
	}
	if p.Name == "underlay" {
		r.base[s] = th.Gbps
	}
	if r.base[s] > 0 {
		res.Ratio = th.Gbps / r.base[s]
	}
	return res, nil
}

// Print writes the report as a table.
func (r Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODE\tPATH\tSTREAMS\tGBIT/S\tVS UNDERLAY\tRTT µs\tCPU s/GB\tTOOL")
	for _, x := range r.Results {
		if x.Unavailable != "" {
			fmt.Fprintf(tw, "%s\t%s\t%d\t-\t-\t-\t-\tunavailable: %s\n", x.Mode, orDash(x.Path), x.Streams, x.Unavailable)
			continue
		}
		cpu := "-"
		if x.CPUSecPerGB > 0 {
			cpu = fmt.Sprintf("%.2f", x.CPUSecPerGB)
		}
		ratio := "-"
		if x.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f×", x.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%s\t%.0f\t%s\t%s\n", x.Mode, orDash(x.Path), x.Streams, x.Gbps, ratio, x.RTTus, cpu, x.Tool)
	}
	tw.Flush()
	if r.Machine != "" {
		fmt.Fprintln(w, "machine:", r.Machine)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Compare returns a's Gbps over b's for the same stream count.
func (r Report) Compare(a, b string, streams int) float64 {
	var ga, gb float64
	for _, x := range r.Results {
		if x.Streams != streams {
			continue
		}
		switch x.Mode {
		case a:
			ga = x.Gbps
		case b:
			gb = x.Gbps
		}
	}
	if gb == 0 {
		return 0
	}
	return ga / gb
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU reads a process's user+system CPU time from /proc.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func machine() string {
	n := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				n = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	var u syscall.Utsname
	syscall.Uname(&u)
	rel := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	return fmt.Sprintf("%s, %d cores, kernel %s", n, runtime.NumCPU(), rel)
}
