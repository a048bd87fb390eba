package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/internal/bench"
	"github.com/weftnet/weft/tunnel"
)

func newBenchCmd(g *globalFlags) *cobra.Command {
	var (
		modes    []string
		streams  []int
		duration time.Duration
		stock    string
		mtu      int
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "measure TCP throughput and RTT through weft on the namespace lab",
		Long: `bench builds a two-node lab and measures, in one run, the raw underlay,
each weft backend asked for, and (with --stock) stock wireguard-go, with
iperf3 at each stream count. Ratios are to the underlay.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot("weft bench"); err != nil {
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			var ms []tunnel.Mode
			for _, s := range modes {
				m, err := tunnel.ParseMode(s)
				if err != nil || m == tunnel.ModeAuto {
					return fmt.Errorf("--modes: %q is not kernel, tun or netstack", s)
				}
				ms = append(ms, m)
			}
			if stock != "" {
				if _, err := os.Stat(stock); err != nil {
					return fmt.Errorf("--stock: %w", err)
				}
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			o := bench.Options{Modes: ms, Streams: streams, Duration: duration, Weft: self, Stock: stock, MTU: mtu, Logger: log}
			if !asJSON {
				o.Progress = cmd.ErrOrStderr()
			}
			rep, err := bench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			rep.Print(cmd.OutOrStdout())
			if stock != "" {
				for _, s := range streams {
					fmt.Fprintf(cmd.OutOrStdout(), "weft-tun vs stock wireguard-go, %d stream(s): %.2f×\n", s, rep.Compare("weft-tun", "wireguard-go", s))
				}
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&modes, "modes", []string{"tun", "netstack"}, "weft backends to measure")
	cmd.Flags().IntSliceVar(&streams, "streams", []int{1, 4}, "parallel TCP stream counts")
	cmd.Flags().DurationVar(&duration, "duration", 5*time.Second, "length of each iperf3 run")
	cmd.Flags().StringVar(&stock, "stock", "", "path of a stock wireguard-go binary to measure in the same run")
	cmd.Flags().IntVar(&mtu, "mtu", 1500, "underlay MTU (tunnels get MTU-80)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"results":[...]} as JSON`)
	return cmd
}
