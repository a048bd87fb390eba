package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/spf13/cobra"

	"github.com/weftnet/weft/cni"
)

// runCNIPlugin is main when the binary runs as /opt/cni/bin/weft: the
// runtime sets CNI_COMMAND, and skel takes over the environment, stdin and
// stdout as the CNI spec defines them.
func runCNIPlugin() {
	// Namespace switches are per thread: keep main on one (as the
	// containernetworking plugins do in init).
	runtime.LockOSThread()
	skel.PluginMainFuncs(cni.Funcs(), cniversion.All, fmt.Sprintf("CNI plugin weft %s", version))
}

func newCNICmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cni",
		Short: "install or uninstall the CNI plugin (the plugin itself is this binary run with CNI_COMMAND set)",
	}
	cmd.AddCommand(newCNIInstallCmd(), newCNIUninstallCmd())
	return cmd
}

func newCNIInstallCmd() *cobra.Command {
	var cfg cni.InstallConfig
	cmd := &cobra.Command{
		Use:   "install",
		Short: "copy this binary to the CNI bin dir and write " + cni.ConflistName + " (atomically; never over files weft did not write)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Executable = exe
			rep, err := cni.Install(cfg)
			for _, w := range rep.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			if err != nil {
				return err
			}
			for _, f := range rep.Wrote {
				fmt.Fprintln(cmd.OutOrStdout(), "wrote", f)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "conflist cniVersion", rep.CNIVersion)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ConfDir, "conf-dir", "/etc/cni/net.d", "CNI config directory")
	f.StringVar(&cfg.BinDir, "bin-dir", "/opt/cni/bin", "CNI plugin directory")
	f.StringVar(&cfg.AgentSocket, "socket", cni.DefaultAgentSocket, "the agent's local API socket, written into the conflist")
	f.StringVar(&cfg.DataDir, "data-dir", cni.DefaultDataDir, "pod address store, written into the conflist")
	f.StringSliceVar(&cfg.Chain, "chain", nil, "plugins to chain after weft, e.g. portmap,bandwidth (looked up in --bin-dir)")
	f.StringVar(&cfg.CNIVersion, "cni-version", "", "conflist cniVersion (default: the newest weft and every chained plugin speak)")
	return cmd
}

func newCNIUninstallCmd() *cobra.Command {
	var cfg cni.UninstallConfig
	var wait bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "remove what weft installed and created on this node: conflist, binary, pod veths and routes, the WireGuard link, the address store, and with --state-dir etc. the agent's files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if exe, err := os.Executable(); err == nil {
				cfg.Executable = exe
			}
			lines, err := cni.Uninstall(cfg)
			for _, l := range lines {
				fmt.Fprintln(cmd.OutOrStdout(), l)
			}
			if err != nil || !wait {
				return err
			}
			// The uninstall DaemonSet's main container: the image has no
			// shell to sleep with, and a running container is what tells
			// `rollout status` this node is done.
			fmt.Fprintln(cmd.OutOrStdout(), "weft removed from this node; waiting for SIGTERM")
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ConfDir, "conf-dir", "/etc/cni/net.d", "CNI config directory")
	f.StringVar(&cfg.BinDir, "bin-dir", "/opt/cni/bin", "CNI plugin directory")
	f.StringVar(&cfg.DataDir, "data-dir", cni.DefaultDataDir, "pod address store (the conflist's, if it is still there)")
	f.StringVar(&cfg.Interface, "interface", "weft0", "the agent's WireGuard interface")
	f.StringVar(&cfg.StateDir, "state-dir", "", "the agent's state dir: remove its state.json, rejoin.json and an old serf.snapshot (e.g. /var/lib/weft)")
	f.StringVar(&cfg.Socket, "socket", "", "the agent's local API socket to remove (e.g. "+cni.DefaultAgentSocket+")")
	f.StringVar(&cfg.UAPIDir, "uapi-dir", "", "remove <interface>.sock here, a userspace device's UAPI socket (e.g. /var/run/wireguard)")
	f.BoolVar(&wait, "wait", false, "after a successful uninstall, keep running until SIGTERM (a DaemonSet's main container)")
	return cmd
}
