package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/netstack"
	"github.com/weftnet/weft/sidecar"
	"github.com/weftnet/weft/sidecar/proxy"
	"github.com/weftnet/weft/tunnel"
)

// envOr is the environment variable's value, or def.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func newSidecarCmd(g *globalFlags) *cobra.Command {
	var (
		node                                     sidecar.Node
		join, keyFile, annotations               string
		expose, forward, socksAddr, httpAddr     string
		bind, advertise, endpoint, cidr, carCIDR string
		blockBits                                int
	)
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "run the unprivileged sidecar: join the mesh in userspace, expose the app's ports, proxy its way out",
		Long: `weft sidecar joins the weft mesh with no TUN device, no capability and no
root: WireGuard runs on a userspace TCP/IP stack. Overlay TCP/UDP for the
exposed ports is forwarded to 127.0.0.1:<port>; the app reaches the mesh
through the SOCKS5 and HTTP CONNECT proxies on 127.0.0.1 and through static
forwards. Every flag has an environment variable (WEFT_...); the pod
annotations weft.dev/expose and weft.dev/forward are read from the
downward API file. On SIGTERM the sidecar leaves the mesh, which frees its
address at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			node.Logger = log
			if err := sidecarConfig(&node, sidecarFlags{
				join: join, keyFile: keyFile, bind: bind, advertise: advertise, endpoint: endpoint,
				cidr: cidr, blockBits: blockBits, carCIDR: carCIDR,
			}); err != nil {
				return err
			}
			ports, forwards, err := sidecarTraffic(annotations, expose, forward)
			if err != nil {
				return err
			}
			node.Expose = netstack.ExposeConfig{TCP: ports.TCP, UDP: ports.UDP}
			return runSidecar(cmd.Context(), log, &node, forwards, socksAddr, httpAddr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&node.Name, "node-name", os.Getenv("WEFT_NODE_NAME"), "member name, unique in the mesh ($WEFT_NODE_NAME; injected: <pod>.<namespace>)")
	f.StringVar(&join, "join", os.Getenv("WEFT_JOIN"), "members to join, host[:port], comma-separated ($WEFT_JOIN)")
	f.StringVar(&keyFile, "gossip-key-file", os.Getenv("WEFT_GOSSIP_KEY_FILE"), "gossip keyring file, primary first ($WEFT_GOSSIP_KEY_FILE)")
	f.BoolVar(&node.InsecureGossip, "insecure-gossip", false, "allow unencrypted gossip (never outside a lab)")
	f.StringVar(&annotations, "annotations-file", os.Getenv("WEFT_ANNOTATIONS_FILE"), "the pod's annotations from the downward API ($WEFT_ANNOTATIONS_FILE)")
	f.StringVar(&expose, "expose", os.Getenv("WEFT_EXPOSE"), "ports forwarded from the mesh to 127.0.0.1, e.g. 8080,53/udp ($WEFT_EXPOSE, annotation weft.dev/expose)")
	f.StringVar(&forward, "forward", os.Getenv("WEFT_FORWARD"), "static forwards LOCAL=TARGET, e.g. 5432=db.weft:5432 ($WEFT_FORWARD, annotation weft.dev/forward)")
	f.StringVar(&socksAddr, "socks-addr", envOr("WEFT_SOCKS_ADDR", "127.0.0.1:1080"), "SOCKS5 proxy address (empty: off) ($WEFT_SOCKS_ADDR)")
	f.StringVar(&httpAddr, "http-proxy-addr", envOr("WEFT_HTTP_PROXY_ADDR", "127.0.0.1:3128"), "HTTP CONNECT proxy address (empty: off) ($WEFT_HTTP_PROXY_ADDR)")
	f.StringVar(&node.MetricsAddr, "metrics-addr", envOr("WEFT_METRICS_ADDR", ":9464"), "address for /metrics, /healthz, /readyz (empty: off) ($WEFT_METRICS_ADDR)")
	f.StringVar(&bind, "bind", envOr("WEFT_BIND", "0.0.0.0:7946"), "gossip bind address ($WEFT_BIND)")
	f.StringVar(&advertise, "advertise", os.Getenv("WEFT_ADVERTISE"), "gossip address to advertise ($WEFT_ADVERTISE)")
	f.StringVar(&endpoint, "endpoint", os.Getenv("WEFT_ENDPOINT"), "IP peers send WireGuard to (default: the advertised gossip address)")
	f.IntVar(&node.ListenPort, "wireguard-port", tunnel.DefaultListenPort, "WireGuard UDP port")
	f.StringVar(&node.StateDir, "state-dir", envOr("WEFT_STATE_DIR", "/var/lib/weft"), "key and lease across container restarts (empty: memory only) ($WEFT_STATE_DIR)")
	f.StringVar(&cidr, "cluster-cidr", agent.DefaultClusterRange, "the mesh's cluster range (as the agents')")
	f.IntVar(&blockBits, "block-size", 24, "the mesh's block size (as the agents')")
	f.StringVar(&carCIDR, "sidecar-cidr", agent.DefaultSidecarRange, "range sidecars lease their address from (as the agents')")
	f.DurationVar(&node.LeaseTTL, "lease-ttl", 10*time.Minute, "how long a failed member keeps its lease (as the agents')")
	f.IntVar(&node.MTU, "mtu", 1500-tunnel.Overhead, "overlay MTU")
	f.StringVar(&node.GossipProfile, "gossip-profile", "lan", "gossip timings: lan, or local for single-machine labs")
	return cmd
}

type sidecarFlags struct {
	join, keyFile, bind, advertise, endpoint, cidr, carCIDR string
	blockBits                                               int
}

// sidecarConfig fills node from the flags.
func sidecarConfig(node *sidecar.Node, fl sidecarFlags) error {
	if node.Name == "" {
		return errors.New("--node-name (or $WEFT_NODE_NAME) is required")
	}
	for _, j := range strings.FieldsFunc(fl.join, func(r rune) bool { return r == ',' || r == ' ' }) {
		a, err := membership.ParseJoinAddr(j)
		if err != nil {
			return err
		}
		node.Join = append(node.Join, a)
	}
	var err error
	if node.Bind, err = parseAddrPort(fl.bind, 7946); err != nil {
		return fmt.Errorf("--bind: %w", err)
	}
	if fl.advertise != "" {
		if node.Advertise, err = parseAddrPort(fl.advertise, node.Bind.Port()); err != nil {
			return fmt.Errorf("--advertise: %w", err)
		}
	}
	if fl.endpoint != "" {
		if node.Endpoint, err = netip.ParseAddr(fl.endpoint); err != nil {
			return fmt.Errorf("--endpoint %q: want an IP address", fl.endpoint)
		}
	}
	if node.ClusterRange, err = netip.ParsePrefix(fl.cidr); err != nil {
		return fmt.Errorf("--cluster-cidr %q: want a network prefix", fl.cidr)
	}
	if node.SidecarRange, err = netip.ParsePrefix(fl.carCIDR); err != nil {
		return fmt.Errorf("--sidecar-cidr %q: want a network prefix", fl.carCIDR)
	}
	node.BlockBits = fl.blockBits
	switch {
	case fl.keyFile != "":
		if node.GossipKeys, err = membership.LoadGossipKeys(fl.keyFile); err != nil {
			return err
		}
		node.GossipKeySource = func() ([][]byte, error) { return membership.LoadGossipKeys(fl.keyFile) }
	case os.Getenv("WEFT_GOSSIP_KEY") != "":
		if node.GossipKeys, err = membership.ParseGossipKeys(os.Getenv("WEFT_GOSSIP_KEY")); err != nil {
			return fmt.Errorf("WEFT_GOSSIP_KEY: %w", err)
		}
	}
	return nil
}

// sidecarTraffic is what to expose and forward: the flags' lists and the
// pod annotations', together.
func sidecarTraffic(annotationsFile, expose, forward string) (sidecar.Ports, []sidecar.Forward, error) {
	if annotationsFile != "" {
		b, err := os.ReadFile(annotationsFile)
		if err != nil {
			return sidecar.Ports{}, nil, fmt.Errorf("annotations: %w", err)
		}
		ann, err := sidecar.ParseAnnotations(b)
		if err != nil {
			return sidecar.Ports{}, nil, fmt.Errorf("%s: %w", annotationsFile, err)
		}
		expose = strings.Join([]string{expose, ann[sidecar.AnnotationExpose]}, ",")
		forward = strings.Join([]string{forward, ann[sidecar.AnnotationForward]}, ",")
	}
	ports, err := sidecar.ParseExpose(expose)
	if err != nil {
		return sidecar.Ports{}, nil, err
	}
	fw, err := sidecar.ParseForwards(forward)
	if err != nil {
		return sidecar.Ports{}, nil, err
	}
	return ports, fw, nil
}

// runSidecar brings the node up, serves the proxies and forwards until ctx
// ends, then stops them and leaves the mesh.
func runSidecar(ctx context.Context, log *slog.Logger, node *sidecar.Node, forwards []sidecar.Forward, socksAddr, httpAddr string) error {
	if err := node.Up(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while joining
		}
		return err
	}
	log.Info("sidecar up", "address", node.Addr(), "expose_tcp", node.Expose.TCP, "expose_udp", node.Expose.UDP)
	px := &proxy.Proxy{Dial: node.ProxyDial, Logger: log}
	serveCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errc := make(chan error, 2+len(forwards))
	serve := func(what, addr string, run func(net.Listener) error) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		log.Info("serving", "what", what, "addr", ln.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ln); err != nil && serveCtx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", what, err)
			}
		}()
		return nil
	}
	var err error
	if socksAddr != "" {
		err = serve("socks5 proxy", socksAddr, func(ln net.Listener) error { return px.ServeSOCKS5(serveCtx, ln) })
	}
	if err == nil && httpAddr != "" {
		err = serve("http proxy", httpAddr, func(ln net.Listener) error { return px.ServeHTTP(serveCtx, ln) })
	}
	for _, f := range forwards {
		if err != nil {
			break
		}
		if f.Network == "udp" {
			err = serveUDPForward(serveCtx, &wg, log, node, f)
			continue
		}
		err = serve("forward "+f.Local.String()+" -> "+f.Target, f.Local.String(), func(ln net.Listener) error {
			return px.ServeForward(serveCtx, ln, "tcp", f.Target)
		})
	}
	if err == nil {
		select {
		case <-ctx.Done():
		case err = <-errc:
		}
	}
	stop()
	wg.Wait()
	log.Info("leaving the mesh")
	if cerr := node.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// serveUDPForward relays datagrams from f.Local to f.Target over the mesh,
// one mesh socket per local client, closed after a minute of silence.
func serveUDPForward(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger, node *sidecar.Node, f sidecar.Forward) error {
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(f.Local))
	if err != nil {
		return fmt.Errorf("forward %s/udp: %w", f.Local, err)
	}
	log.Info("serving", "what", "udp forward "+f.Local.String()+" -> "+f.Target)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sidecar.RelayUDP(ctx, pc, func(ctx context.Context) (net.Conn, error) { return node.Dial(ctx, "udp", f.Target) }, time.Minute)
	}()
	return nil
}
