package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/kubejoin"
	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/internal/procs"
	"github.com/weftnet/weft/tunnel"
)

// agentFlags are the flags of `weft agent`: the agent's Config where a
// flag maps onto a field, and the raw text of the rest until config parses
// it.
type agentFlags struct {
	cfg                                  agent.Config
	join                                 []string
	bind, advertise, cidr, mode, keyFile string
	endpoint, metrics, profile           string
	sidecarCIDR                          string
	cpuProfile                           string
	blockBits                            int
	keep                                 bool
	joinFromKube                         bool
	kubeconfig, joinNodeSelector         string
	timerSlack                           time.Duration
}

func newAgentCmd(g *globalFlags) *cobra.Command {
	var af agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "run the node agent: join the mesh, lease a pod block, keep WireGuard peers and routes in line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			return runAgent(cmd.Context(), &af, log)
		},
	}
	af.register(cmd)
	return cmd
}

// runAgent runs the agent the flags describe until ctx ends.
func runAgent(ctx context.Context, af *agentFlags, log *slog.Logger) error {
	if af.timerSlack > 0 {
		// Before anything is opened: this executes the binary
		// again (internal/procs), once.
		if err := procs.ExecWithTimerSlack(af.timerSlack); err != nil {
			log.Warn("running with the default timer slack", "err", err)
		}
	}
	cfg, err := af.config(ctx, log)
	if err != nil {
		return err
	}
	// The GOMAXPROCS governor samples after the agent's probes
	// (internal/procs, Config.Poke), not on a timer of its own.
	var probed chan struct{}
	if os.Getenv("GOMAXPROCS") == "" {
		probed = make(chan struct{}, 1)
		cfg.OnProbe = func() {
			select {
			case probed <- struct{}{}:
			default:
			}
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// wireguard-go keeps ~24 MiB of 64 KiB packet buffers that
		// are mostly never touched (so not resident), but they
		// count as live heap: GOGC is a share of them. At the default
		// 100 the garbage of an idle agent (gossip, keepalives) stays
		// resident: in the 25-agent lab the largest idle agent held
		// 22.3 MiB of anonymous memory at 100 and 11.8 MiB at 10, for
		// 4-9 % more CPU per GB through a busy tun device
		// (docs/performance.md). A memory limit (debug.SetMemoryLimit)
		// would collect as often while the live heap is below it and
		// run the collector flat out once a large mesh's peers
		// (24 KiB each) carry the live heap past it; a share of the
		// live heap grows with the mesh. GOMEMLIMIT, if set, still
		// applies on top.
		debug.SetGCPercent(10)
	}
	if af.cpuProfile != "" {
		stop, err := startCPUProfile(af.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if probed != nil {
		// An idle agent runs on one P, a busy one on all
		// (internal/procs); GOMAXPROCS set by hand is left alone.
		defer startGovernor(ctx, probed, log)()
	}
	return a.Run(ctx)
}

// startCPUProfile writes a CPU profile to path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// startGovernor runs the GOMAXPROCS governor, poked by probed, until stop
// is called; stop waits for it to end.
func startGovernor(ctx context.Context, probed <-chan struct{}, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := procs.Run(ctx, procs.Config{Poke: probed}); err != nil {
			log.Warn("GOMAXPROCS governor stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }
}

// config parses the flags into the agent's Config; with
// --join-from-kubernetes it lists the Nodes to join, once.
func (af *agentFlags) config(ctx context.Context, log *slog.Logger) (agent.Config, error) {
	cfg := af.cfg
	if err := af.parseAddresses(&cfg); err != nil {
		return agent.Config{}, err
	}
	if err := af.parsePools(&cfg); err != nil {
		return agent.Config{}, err
	}
	var err error
	if cfg.Mode, err = tunnel.ParseMode(af.mode); err != nil {
		return agent.Config{}, fmt.Errorf("--mode: %w", err)
	}
	if err := af.gossipKeys(&cfg); err != nil {
		return agent.Config{}, err
	}
	if af.joinFromKube && len(cfg.Join) == 0 {
		// Once, before the agent starts; gossip does the rest.
		cfg.Join, err = kubejoin.Discover(ctx, kubejoin.Config{
			Kubeconfig: af.kubeconfig, Self: cfg.NodeName, Port: int(cfg.Bind.Port()),
			Selector: af.joinNodeSelector, Logger: log,
		})
		if err != nil {
			return agent.Config{}, err
		}
	}
	cfg.MetricsAddr = af.metrics
	cfg.GossipProfile = af.profile
	cfg.LeaveOnExit = !af.keep
	cfg.Logger = log
	return cfg, nil
}

// parseAddresses parses --join, --bind, --advertise and --endpoint.
func (af *agentFlags) parseAddresses(cfg *agent.Config) error {
	for _, j := range af.join {
		a, err := membership.ParseJoinAddr(j)
		if err != nil {
			return err
		}
		cfg.Join = append(cfg.Join, a)
	}
	var err error
	if cfg.Bind, err = parseAddrPort(af.bind, 7946); err != nil {
		return fmt.Errorf("--bind: %w", err)
	}
	if af.advertise != "" {
		if cfg.Advertise, err = parseAddrPort(af.advertise, cfg.Bind.Port()); err != nil {
			return fmt.Errorf("--advertise: %w", err)
		}
	}
	if af.endpoint != "" {
		if cfg.Endpoint, err = netip.ParseAddr(af.endpoint); err != nil {
			return fmt.Errorf("--endpoint %q: want an IP address", af.endpoint)
		}
	}
	return nil
}

// parsePools parses --cluster-cidr, --block-size and --sidecar-cidr.
func (af *agentFlags) parsePools(cfg *agent.Config) error {
	var err error
	if cfg.Pool.Range, err = netip.ParsePrefix(af.cidr); err != nil || cfg.Pool.Range != cfg.Pool.Range.Masked() {
		return fmt.Errorf("--cluster-cidr %q: want a network prefix such as 100.64.0.0/16", af.cidr)
	}
	cfg.Pool.BlockBits = af.blockBits
	if cfg.SidecarRange, err = netip.ParsePrefix(af.sidecarCIDR); err != nil || cfg.SidecarRange != cfg.SidecarRange.Masked() {
		return fmt.Errorf("--sidecar-cidr %q: want a network prefix such as 100.127.0.0/16", af.sidecarCIDR)
	}
	return nil
}

// gossipKeys reads the gossip keyring from --gossip-key-file, which the
// agent then follows, or else from $WEFT_GOSSIP_KEY.
func (af *agentFlags) gossipKeys(cfg *agent.Config) error {
	var err error
	if af.keyFile != "" {
		if cfg.GossipKeys, err = membership.LoadGossipKeys(af.keyFile); err != nil {
			return err
		}
		// Rotation is an edit of the file (a Secret): see agent/membership/keyring.go.
		keyFile := af.keyFile
		cfg.GossipKeySource = func() ([][]byte, error) { return membership.LoadGossipKeys(keyFile) }
	} else if v := os.Getenv("WEFT_GOSSIP_KEY"); v != "" {
		if cfg.GossipKeys, err = membership.ParseGossipKeys(v); err != nil {
			return fmt.Errorf("WEFT_GOSSIP_KEY: %w", err)
		}
	}
	return nil
}

// register declares the flags. One declaration a line, so the list is as
// long as the flags are many.
func (af *agentFlags) register(cmd *cobra.Command) {
	cfg, f := &af.cfg, cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "member name (default $NODE_NAME, else the hostname)")
	f.StringSliceVar(&af.join, "join", nil, "members to join, host[:port] (repeatable)")
	f.BoolVar(&af.joinFromKube, "join-from-kubernetes", false, "without --join: list the Kubernetes Nodes once at start and join a few of them")
	f.StringVar(&af.kubeconfig, "kubeconfig", "", "kubeconfig for --join-from-kubernetes (default: the pod's service account)")
	f.StringVar(&af.joinNodeSelector, "join-node-selector", kubejoin.DefaultSelector, "label selector of the Nodes that run agents, for --join-from-kubernetes (- for all)")
	f.StringVar(&af.bind, "bind", "0.0.0.0:7946", "gossip bind address")
	f.StringVar(&af.advertise, "advertise", "", "gossip address to advertise (default: picked from the bind address)")
	f.StringVar(&af.endpoint, "endpoint", "", "underlay IP peers send WireGuard to (default: the advertised gossip address)")
	f.StringVar(&af.cidr, "cluster-cidr", "100.64.0.0/16", "cluster pod range, cut into blocks")
	f.IntVar(&af.blockBits, "block-size", 24, "prefix length of one node's block")
	f.StringVar(&af.sidecarCIDR, "sidecar-cidr", "100.127.0.0/16", "range sidecars lease single addresses from (the same on every member)")
	f.StringVar(&af.keyFile, "gossip-key-file", "", "gossip keyring file: base64 keys, one per line, primary first (or $WEFT_GOSSIP_KEY)")
	f.BoolVar(&cfg.InsecureGossip, "insecure-gossip", false, "allow unencrypted gossip (never do this outside a lab)")
	f.IntVar(&cfg.ListenPort, "wireguard-port", tunnel.DefaultListenPort, "WireGuard UDP port")
	f.StringVar(&af.mode, "mode", "auto", "tunnel backend: auto, kernel, tun or netstack")
	f.StringVar(&cfg.Interface, "interface", "weft0", "WireGuard interface name")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/weft", "where state.json (key, lease) and rejoin.json (members to rejoin) live")
	f.StringVar(&cfg.SocketPath, "socket", "/run/weft/agent.sock", "local API socket")
	f.StringVar(&af.metrics, "metrics-addr", ":9484", "address for /metrics, /healthz, /readyz (empty: off)")
	f.DurationVar(&cfg.Pool.TTL, "lease-ttl", 10*time.Minute, "how long a failed node keeps its block")
	f.IntVar(&cfg.MTU, "mtu", 1500-tunnel.Overhead, "tunnel MTU (underlay MTU - 80)")
	f.DurationVar(&cfg.Keepalive, "keepalive", 25*time.Second, "WireGuard persistent keepalive for every peer (negative: off)")
	f.DurationVar(&cfg.KeyRotation, "key-rotation", 0, "rotate the WireGuard key this often (0: off)")
	f.DurationVar(&af.timerSlack, "timer-slack", 2*time.Millisecond, "how late the kernel may fire the agent's timers, to serve several with one wakeup (0: the system's default)")
	f.StringVar(&af.cpuProfile, "cpu-profile", "", "write a CPU profile of the agent to this file until it exits")
	f.MarkHidden("cpu-profile")
	f.BoolVar(&af.keep, "keep-on-exit", false, "do not leave the mesh on exit (the block stays held for the lease TTL)")
	f.StringVar(&af.profile, "gossip-profile", "lan", "gossip timings: lan, or local for single-machine labs")
}

func parseAddrPort(s string, defPort uint16) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: want ip[:port]", s)
	}
	return netip.AddrPortFrom(a, defPort), nil
}
