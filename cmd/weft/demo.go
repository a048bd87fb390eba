package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/internal/demo"
	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/tunnel"
)

func newDemoCmd(g *globalFlags) *cobra.Command {
	var (
		mode string
		mib  int
		keep bool
		down bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "run weft on a built-in network-namespace lab, check it, and clean up",
		Long: `demo builds a lab of network namespaces joined by a bridge (nothing in the
root namespace changes), connects the nodes with weft's userspace tunnel,
pings across, moves data with a hash check while capturing the underlay to
prove it is encrypted, shows 'wg show', measures throughput, and removes
everything it made. It exits non-zero if any check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot("weft demo"); err != nil {
				return err
			}
			if down {
				removed, err := netlab.Cleanup()
				for _, n := range removed {
					fmt.Fprintln(cmd.OutOrStdout(), "removed netns", n)
				}
				if len(removed) == 0 && err == nil {
					fmt.Fprintln(cmd.OutOrStdout(), "nothing to remove")
				}
				return err
			}
			m, err := tunnel.ParseMode(mode)
			if err != nil {
				return err
			}
			if m == tunnel.ModeAuto {
				m = tunnel.ModeTUN
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			return demo.Run(cmd.Context(), demo.Options{Mode: m, TransferMiB: mib, Keep: keep, Out: cmd.OutOrStdout(), Logger: log})
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "tun", "tunnel backend: tun, netstack or kernel")
	cmd.Flags().IntVar(&mib, "transfer-mib", 64, "size of the hashed TCP transfer in MiB")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the lab up until interrupted")
	cmd.Flags().BoolVar(&down, "down", false, "remove what a crashed demo left (every weft-* namespace) and exit")
	return cmd
}
