package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/internal/status"
)

func newStatusCmd(g *globalFlags) *cobra.Command {
	var socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show the mesh as this node sees it: members, leases, WireGuard handshakes and traffic",
		Long: `status asks the local agent (its unix socket) for members and leases, and reads
the WireGuard device itself through wgctrl (netlink for a kernel device, the
UAPI socket for a userspace one) for handshakes and byte counters.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := api.NewClient(socket).Status(cmd.Context())
			if err != nil {
				return fmt.Errorf("no weft agent reachable at %s (is `weft agent` running on this node, with this --socket?): %w", socket, err)
			}
			overlayWgctrl(&st)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			status.Print(cmd.OutOrStdout(), st, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "/run/weft/agent.sock", "the agent's local API socket")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// overlayWgctrl replaces the agent's peer counters with what wgctrl reads
// from the device right now, when it can.
func overlayWgctrl(st *api.Report) {
	c, err := wgctrl.New()
	if err != nil {
		return
	}
	defer c.Close()
	d, err := c.Device(st.Self.Interface)
	if err != nil {
		return
	}
	byKey := map[string]int{}
	for i, m := range st.Members {
		byKey[m.PublicKey] = i
	}
	for _, p := range d.Peers {
		i, ok := byKey[p.PublicKey.String()]
		if !ok || st.Members[i].Name == st.Self.Name {
			continue
		}
		ps := &api.PeerReport{RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes}
		if p.LastHandshakeTime.Unix() > 0 {
			ps.LastHandshake = p.LastHandshakeTime
		}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		st.Members[i].Peer = ps
	}
}
