package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/internal/bench"
	"github.com/weftnet/weft/tunnel"
)

// benchFlags are the flags of `weft bench`.
type benchFlags struct {
	modes      []string
	streams    []int
	duration   time.Duration
	stock      string
	mtu        int
	nodeToNode bool
	sidecar    bool
	asJSON     bool
}

func newBenchCmd(g *globalFlags) *cobra.Command {
	var bf benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "measure TCP throughput and RTT through weft, pod to pod, on the namespace lab",
		Long: `bench builds a two-node lab and measures, in one run, the raw underlay (node
to node) and each weft backend: kernel (where the module exists) and tun pod
to pod across the nodes, with a 'weft agent' per node and the pods added
through the CNI plugin; netstack node to node (a userspace stack has no
interface to put a pod behind). With --stock, stock wireguard-go node to
node. iperf3 at each stream count when installed, else the built-in Go
sender. Ratios are to the underlay of the same run.

'weft bench server' and 'weft bench client' measure between two real pods.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return bf.run(cmd, g) },
	}
	f := cmd.Flags()
	f.StringSliceVar(&bf.modes, "modes", []string{"kernel", "tun", "netstack"}, "weft backends to measure (kernel is reported unavailable without the module)")
	f.IntSliceVar(&bf.streams, "streams", []int{1, 4}, "parallel TCP stream counts")
	f.DurationVar(&bf.duration, "duration", 5*time.Second, "length of each throughput run")
	f.StringVar(&bf.stock, "stock", "", "path of a stock wireguard-go binary to measure in the same run")
	f.IntVar(&bf.mtu, "mtu", 1500, "underlay MTU (tunnels get MTU-80)")
	f.BoolVar(&bf.sidecar, "sidecar", true, "also measure an app behind an unprivileged `weft sidecar` reaching a host-mode pod")
	f.BoolVar(&bf.nodeToNode, "node-to-node", false, "also measure tun node to node (one `weft tunnel up` process per node)")
	f.BoolVar(&bf.asJSON, "json", false, `print {"results":[...]} as JSON`)
	cmd.AddCommand(newBenchServerCmd(), newBenchClientCmd())
	return cmd
}

// run measures as the flags say and prints the report.
func (bf *benchFlags) run(cmd *cobra.Command, g *globalFlags) error {
	if err := requireRoot("weft bench"); err != nil {
		return err
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	ms, err := parseBenchModes(bf.modes)
	if err != nil {
		return err
	}
	if bf.stock != "" {
		if _, err := os.Stat(bf.stock); err != nil {
			return fmt.Errorf("--stock: %w", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	o := bench.Options{Modes: ms, Streams: bf.streams, Duration: bf.duration, Weft: self, Stock: bf.stock,
		MTU: bf.mtu, NodeToNode: bf.nodeToNode, Sidecar: bf.sidecar, Logger: log, Progress: cmd.ErrOrStderr()}
	rep, err := bench.Run(cmd.Context(), o)
	if err != nil {
		return err
	}
	if err := printReport(cmd.OutOrStdout(), rep, bf.asJSON); err != nil {
		return err
	}
	if !bf.asJSON {
		bf.printComparisons(cmd.OutOrStdout(), rep, ms)
	}
	return nil
}

// parseBenchModes parses --modes: kernel, tun or netstack each.
func parseBenchModes(modes []string) ([]tunnel.Mode, error) {
	var ms []tunnel.Mode
	for _, s := range modes {
		m, err := tunnel.ParseMode(s)
		if err != nil || m == tunnel.ModeAuto {
			return nil, fmt.Errorf("--modes: %q is not kernel, tun or netstack", s)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// printComparisons prints the sidecar against tun pod to pod, and weft
// against stock wireguard-go, where the run measured them.
func (bf *benchFlags) printComparisons(w io.Writer, rep bench.Report, ms []tunnel.Mode) {
	if bf.sidecar && slices.Contains(ms, tunnel.ModeTUN) {
		for _, s := range bf.streams {
			fmt.Fprintf(w, "sidecar vs tun, pod to pod, %d stream(s): %.2f×\n", s, rep.Compare("weft-sidecar", "weft-tun", s))
		}
	}
	if bf.stock != "" {
		// Like with like: stock wireguard-go runs node to node.
		weft := "weft-tun"
		if bf.nodeToNode {
			weft = "weft-tun-process"
		}
		for _, s := range bf.streams {
			fmt.Fprintf(w, "%s vs stock wireguard-go, %d stream(s): %.2f×\n", weft, s, rep.Compare(weft, "wireguard-go", s))
		}
	}
}

func printReport(w io.Writer, rep bench.Report, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.Print(w)
	return nil
}

func newBenchServerCmd() *cobra.Command {
	var (
		listen string
		tool   string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "answer `weft bench client` (run it in one pod; the client in another)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch tool {
			case "go":
				l, err := net.Listen("tcp", listen)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "weft bench server listening on", l.Addr())
				return bench.Serve(cmd.Context(), l)
			case "iperf3":
				_, port, err := net.SplitHostPort(listen)
				if err != nil {
					return fmt.Errorf("--listen %q: %w", listen, err)
				}
				p, err := strconv.Atoi(port)
				if err != nil {
					return fmt.Errorf("--listen %q: port: %w", listen, err)
				}
				return bench.ServeIperf3(cmd.Context(), p, cmd.ErrOrStderr())
			}
			return fmt.Errorf("--tool %q: want go or iperf3", tool)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", ":"+strconv.Itoa(bench.DefaultPort), "address to listen on")
	cmd.Flags().StringVar(&tool, "tool", "go", "go (built in: both pods need only weft) or iperf3 (runs iperf3 -s)")
	return cmd
}

func newBenchClientCmd() *cobra.Command {
	var (
		target   string
		tool     string
		label    string
		streams  []int
		duration time.Duration
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "client",
		Short: "measure RTT and TCP throughput to a `weft bench server` in another pod",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, port, err := net.SplitHostPort(target)
			if err != nil {
				host, port = target, strconv.Itoa(bench.DefaultPort)
			}
			var rep bench.Report
			switch tool {
			case "go":
				rep, err = bench.Client(cmd.Context(), net.JoinHostPort(host, port), label, streams, duration)
			case "iperf3":
				var p int
				if p, err = strconv.Atoi(port); err != nil {
					return fmt.Errorf("--target %q: port: %w", target, err)
				}
				rep, err = bench.ClientIperf3(cmd.Context(), host, p, label, streams, duration)
			default:
				return fmt.Errorf("--tool %q: want go or iperf3", tool)
			}
			if err != nil {
				return err
			}
			return printReport(cmd.OutOrStdout(), rep, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "the server pod's address, host[:port] (port 5201 by default)")
	f.StringVar(&tool, "tool", "go", "go or iperf3: the same as the server's")
	f.StringVar(&label, "mode", "cluster", "label for the results' mode field (e.g. the backend the nodes run)")
	f.IntSliceVar(&streams, "streams", []int{1, 4}, "parallel TCP stream counts")
	f.DurationVar(&duration, "duration", 5*time.Second, "length of each throughput run")
	f.BoolVar(&asJSON, "json", false, `print {"results":[...]} as JSON`)
	cmd.MarkFlagRequired("target")
	return cmd
}
