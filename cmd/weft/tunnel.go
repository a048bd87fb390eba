package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/tunnel"
)

func newTunnelCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tunnel",
		Short: "run a bare weft WireGuard device (no mesh): for benchmarks and debugging",
	}
	var (
		name, mode, keyFile, address string
		port, mtu                    int
		peers                        []string
	)
	up := &cobra.Command{
		Use:   "up",
		Short: "bring up one device with static peers and keep it up until interrupted",
		Long: `up brings up a device with a private key from a file (mode 0600) and static
peers, prints "ready <name> <mode> <public key>" once it is up, and keeps it
up until SIGINT/SIGTERM. 'wg show <name>' reads it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			m, err := tunnel.ParseMode(mode)
			if err != nil {
				return err
			}
			key, err := tunnel.LoadPrivateKey(keyFile)
			if err != nil {
				return err
			}
			cfg := tunnel.Config{Name: name, Mode: m, PrivateKey: key, ListenPort: port, MTU: mtu, Logger: log}
			if address != "" {
				if cfg.Address, err = netip.ParsePrefix(address); err != nil {
					return fmt.Errorf("--address %q: want an address with prefix, e.g. 100.64.0.1/24", address)
				}
			}
			var ps []tunnel.Peer
			for _, s := range peers {
				p, err := tunnel.ParsePeerSpec(s)
				if err != nil {
					return fmt.Errorf("--peer: %w", err)
				}
				ps = append(ps, p)
			}
			dev, err := tunnel.Open(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer dev.Close()
			if err := dev.SetPeers(ps); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ready %s %s %s\n", dev.Name(), dev.Mode(), dev.PublicKey())
			<-cmd.Context().Done()
			return nil
		},
	}
	up.Flags().StringVar(&name, "name", "weft0", "interface name")
	up.Flags().StringVar(&mode, "mode", "auto", "backend: auto, kernel, tun or netstack")
	up.Flags().StringVar(&keyFile, "private-key-file", "", "file with the base64 private key (mode 0600)")
	up.Flags().StringVar(&address, "address", "", "overlay address with prefix, e.g. 100.64.0.1/24")
	up.Flags().IntVar(&port, "listen-port", tunnel.DefaultListenPort, "WireGuard UDP port")
	up.Flags().IntVar(&mtu, "mtu", 1420, "device MTU")
	up.Flags().StringArrayVar(&peers, "peer", nil, "a peer as PUBKEY,ENDPOINT,CIDR[,CIDR...] (repeatable)")
	up.MarkFlagRequired("private-key-file")
	cmd.AddCommand(up)
	return cmd
}
