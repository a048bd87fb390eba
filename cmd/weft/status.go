package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/weftnet/weft/agent"
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
			st, err := agent.NewClient(socket).Status(cmd.Context())
			if err != nil {
				return fmt.Errorf("no agent reachable: %w", err)
			}
			overlayWgctrl(&st)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "/run/weft/agent.sock", "the agent's local API socket")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// overlayWgctrl replaces the agent's peer counters with what wgctrl reads
// from the device right now, when it can.
func overlayWgctrl(st *agent.Report) {
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
		ps := &agent.PeerReport{RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes}
		if p.LastHandshakeTime.Unix() > 0 {
			ps.LastHandshake = p.LastHandshakeTime
		}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		st.Members[i].Peer = ps
	}
}

func printStatus(w io.Writer, st agent.Report, now time.Time) {
	s := st.Self
	enc := "encrypted"
	if !s.GossipEncrypted {
		enc = "NOT ENCRYPTED"
	}
	fmt.Fprintf(w, "node %s  key %s  mode %s  mtu %d  block %s  address %s  gossip %s  ready %v\n",
		s.Name, s.Fingerprint, s.Mode, s.MTU, orDash(s.Block), orDash(s.Address), enc, st.Ready)
	if st.LastError != "" {
		fmt.Fprintf(w, "last error: %s\n", st.LastError)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tMODE\tENDPOINT\tBLOCK\tHANDSHAKE\tRX\tTX\tNOTE")
	for _, m := range st.Members {
		hs, rx, tx := "-", "-", "-"
		if m.Peer != nil {
			if !m.Peer.LastHandshake.IsZero() {
				hs = now.Sub(m.Peer.LastHandshake).Round(time.Second).String() + " ago"
			} else {
				hs = "never"
			}
			rx, tx = bytesHuman(m.Peer.RxBytes), bytesHuman(m.Peer.TxBytes)
		}
		note := ""
		switch {
		case m.Name == s.Name:
			note = "self"
		case m.TagsError != "":
			note = "ignored: " + m.TagsError
		case m.Block != "" && !m.OwnsBlock:
			note = "lost lease conflict"
		}
		state := m.State
		if m.State != "alive" {
			state += " " + now.Sub(m.Since).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, state, orDash(m.Mode), orDash(m.Endpoint), orDash(m.Block), hs, rx, tx, note)
	}
	tw.Flush()
	for _, c := range st.Conflicts {
		fmt.Fprintf(w, "conflict: %s was claimed by %s and %s; %s kept it\n", c.Block, c.Winner, c.Loser, c.Winner)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
