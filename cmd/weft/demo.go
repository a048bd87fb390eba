package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/internal/demo"
)

func newDemoCmd(g *globalFlags) *cobra.Command {
	var (
		o    demo.Options
		down bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "run weft on a built-in network-namespace lab: agents, CNI pods, encryption check, throughput; then clean up",
		Long: `demo builds a lab of network namespaces joined by a bridge (nothing in the
root namespace changes), starts a 'weft agent' on every node with a freshly
generated gossip key, adds pods through the CNI plugin (libcni, as a runtime
does; conflists and state in a temporary directory, nothing in /etc or /opt),
shows the mesh forming, prints 'weft status', makes every pod talk to every
other while capturing the underlay to prove only WireGuard and encrypted
gossip cross it, measures pod-to-pod throughput, and removes everything it
made. It exits non-zero if any check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot("weft demo"); err != nil {
				return err
			}
			if down {
				done, err := demo.Down(demo.DownConfig{})
				for _, l := range done {
					fmt.Fprintln(cmd.OutOrStdout(), l)
				}
				if len(done) == 0 && err == nil {
					fmt.Fprintln(cmd.OutOrStdout(), "nothing to remove")
				}
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			if o.Bin, err = os.Executable(); err != nil {
				return err
			}
			o.Out, o.Logger = cmd.OutOrStdout(), log
			if f, ok := o.Out.(*os.File); ok {
				if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
					o.Terminal = true
				}
			}
			return demo.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", 3, "lab nodes, each with its own agent")
	f.IntVar(&o.Pods, "pods", 2, "pods per node, added through the CNI plugin")
	f.StringVar(&o.Mode, "mode", "auto", "the agents' tunnel backend: auto, kernel or tun (pods need a kernel interface)")
	f.IntVar(&o.TransferMiB, "transfer-mib", 32, "size of the hashed pod-to-pod transfer in MiB")
	f.BoolVar(&o.Keep, "keep", false, "keep the lab up until interrupted")
	f.BoolVar(&down, "down", false, "remove what a crashed demo left (agents, every weft-* namespace, stale lab UAPI sockets, its temp dirs) and exit")
	return cmd
}
