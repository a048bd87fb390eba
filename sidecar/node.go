package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/plan"
	prom "github.com/weftnet/weft/internal/metrics"
	"github.com/weftnet/weft/netstack"
	"github.com/weftnet/weft/tunnel"
)

// Domain is the pseudo top-level domain of member names: Dial("tcp",
// "db.weft:5432") reaches member "db".
const Domain = ".weft"

// Node is a mesh member that lives entirely in this process: a Serf member
// in mode "sidecar" with one address leased from the sidecar range, and a
// WireGuard device on a userspace TCP/IP stack. It needs no TUN, no
// capability and no root. Fill in the fields, call Up, then Dial and
// Listen on the mesh; Close leaves it (the address is free at once).
type Node struct {
	// Name is the member name, unique in the mesh (required).
	Name string
	// Join lists members to contact ("host[:port]").
	Join []string
	// GossipKeys is the gossip keyring, primary first; required unless
	// InsecureGossip.
	GossipKeys     [][]byte
	InsecureGossip bool
	// GossipKeySource, if set, is re-read for key rotation (agent.Config).
	GossipKeySource func() ([][]byte, error)
	// Bind is the gossip address (0.0.0.0:7946); Advertise what others use.
	Bind      netip.AddrPort
	Advertise netip.AddrPort
	// ListenPort is WireGuard's UDP port (51820; tests pick free ones).
	ListenPort int
	// Endpoint is the address peers send WireGuard to (the advertised one).
	Endpoint netip.Addr
	// ClusterRange and SidecarRange must match the mesh's (agent defaults).
	ClusterRange netip.Prefix
	BlockBits    int
	SidecarRange netip.Prefix
	LeaseTTL     time.Duration
	// MTU of the overlay (1420).
	MTU int
	// Interface names the device and its UAPI socket (weft0), for `wg
	// show` where /var/run/wireguard is writable.
	Interface string
	// StateDir keeps the key and lease across restarts; "" keeps them in
	// memory only.
	StateDir string
	// MetricsAddr serves /metrics, /healthz and /readyz ("" off).
	MetricsAddr string
	// Expose forwards overlay TCP/UDP for these ports to 127.0.0.1
	// (netstack.ExposeConfig); nothing is exposed when both lists are
	// empty.
	Expose netstack.ExposeConfig
	// GossipProfile is "lan" (default) or "local" for single-machine labs.
	GossipProfile string
	// Logger and Registry as in agent.Config.
	Logger   *slog.Logger
	Registry *prom.Registry

	mu     sync.Mutex
	agent  *agent.Agent
	stack  *netstack.Stack
	cancel context.CancelFunc
	done   chan error
	closed bool
}

// ErrNotUp is returned by the methods that need the mesh before Up.
var ErrNotUp = errors.New("sidecar: node is not up")

// Up joins the mesh and returns once the node holds an address and its
// device is up, or ctx ends, or the node fails to start.
func (n *Node) Up(ctx context.Context) error {
	n.mu.Lock()
	if n.agent != nil || n.closed {
		n.mu.Unlock()
		return errors.New("sidecar: Up called twice")
	}
	cfg := agent.Config{
		NodeName:        n.Name,
		Join:            n.Join,
		Bind:            n.Bind,
		Advertise:       n.Advertise,
		GossipKeys:      n.GossipKeys,
		InsecureGossip:  n.InsecureGossip,
		GossipKeySource: n.GossipKeySource,
		GossipProfile:   n.GossipProfile,
		Pool:            plan.LeaseConfig{Range: n.ClusterRange, BlockBits: n.BlockBits, TTL: n.LeaseTTL},
		SidecarRange:    n.SidecarRange,
		Sidecar:         true,
		Mode:            tunnel.ModeNetstack,
		ListenPort:      n.ListenPort,
		Endpoint:        n.Endpoint,
		MTU:             n.MTU,
		Interface:       n.Interface,
		StateDir:        n.StateDir,
		Ephemeral:       n.StateDir == "",
		SocketPath:      "-",
		MetricsAddr:     n.MetricsAddr,
		LeaveOnExit:     true,
		Logger:          n.Logger,
		Registry:        n.Registry,
	}
	if n.Name == "" {
		n.mu.Unlock()
		return errors.New("sidecar: Name is required")
	}
	a, err := agent.New(cfg)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("sidecar %s: %w", n.Name, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n.agent, n.cancel, n.done = a, cancel, make(chan error, 1)
	n.mu.Unlock()
	go func() { n.done <- a.Run(runCtx) }()

	select {
	case <-a.Ready():
	case err := <-n.done:
		n.done <- err // for Close
		if err == nil {
			err = errors.New("agent stopped")
		}
		return fmt.Errorf("sidecar %s: %w", n.Name, err)
	case <-ctx.Done():
		n.Close()
		return fmt.Errorf("sidecar %s: joining the mesh: %w", n.Name, ctx.Err())
	}
	nd, ok := a.Device().(*tunnel.NetstackDevice)
	if !ok {
		n.Close()
		return fmt.Errorf("sidecar %s: device is %T, not netstack", n.Name, a.Device())
	}
	st := nd.Stack()
	if len(n.Expose.TCP) > 0 || len(n.Expose.UDP) > 0 {
		if err := st.Expose(n.Expose); err != nil {
			n.Close()
			return fmt.Errorf("sidecar %s: %w", n.Name, err)
		}
	}
	n.mu.Lock()
	n.stack = st
	n.mu.Unlock()
	return nil
}

// Addr is the node's overlay address (invalid before Up).
func (n *Node) Addr() netip.Addr {
	a := n.agentOrNil()
	if a == nil {
		return netip.Addr{}
	}
	return a.Address()
}

// Stack is the node's userspace TCP/IP stack (nil before Up).
func (n *Node) Stack() *netstack.Stack {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stack
}

func (n *Node) agentOrNil() *agent.Agent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.agent
}

// Resolve returns the overlay address of host: an IP address as it is, or
// "<member>.weft" (or a bare member name) as the address of that member,
// which must be alive and own its lease: a node's address for a host-mode
// member, the single address of a sidecar.
func (n *Node) Resolve(host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, nil
	}
	a := n.agentOrNil()
	if a == nil {
		return netip.Addr{}, ErrNotUp
	}
	name := strings.TrimSuffix(strings.TrimSuffix(host, "."), Domain)
	for _, m := range a.Members() {
		if m.Name == name && m.Status == plan.StatusAlive && m.TagsErr == nil && m.Tags.Block.IsValid() {
			return plan.NodeAddress(m.Tags.Block), nil
		}
	}
	return netip.Addr{}, &net.DNSError{Err: "no such member in the mesh", Name: host, IsNotFound: true}
}

// Dial connects to address on the mesh ("tcp", "udp" and their 4/6
// forms); the host may be an overlay IP or a member name.
func (n *Node) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	st := n.Stack()
	if st == nil {
		return nil, ErrNotUp
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("sidecar: dial %s: %w", address, err)
	}
	ip, err := n.Resolve(host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return st.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
}

// Listen listens for TCP on the node's overlay address; address is ":port"
// or the node's own address with a port.
func (n *Node) Listen(network, address string) (net.Listener, error) {
	st := n.Stack()
	if st == nil {
		return nil, ErrNotUp
	}
	return st.Listen(network, n.ownAddress(address))
}

// ListenPacket listens for UDP on the node's overlay address.
func (n *Node) ListenPacket(network, address string) (net.PacketConn, error) {
	st := n.Stack()
	if st == nil {
		return nil, ErrNotUp
	}
	return st.ListenPacket(network, n.ownAddress(address))
}

// ownAddress fills in the node's address when address names only a port.
func (n *Node) ownAddress(address string) string {
	host, port, err := net.SplitHostPort(address)
	if err != nil || host != "" {
		return address
	}
	return net.JoinHostPort(n.Addr().String(), port)
}

// Close leaves the mesh (freeing the node's address at once), closes the
// device and waits for everything to stop. It is safe to call more than
// once.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	cancel, done := n.cancel, n.done
	n.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	err := <-done
	done <- err
	return err
}

// inMesh reports whether host is reached over the mesh: a member name
// ("<member>.weft") or an address of the cluster or sidecar range.
func (n *Node) inMesh(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		return n.clusterRange().Contains(ip) || n.sidecarRange().Contains(ip)
	}
	return strings.HasSuffix(strings.TrimSuffix(host, "."), Domain)
}

// ProxyDial is the dial of the sidecar's proxies and forwards: mesh
// destinations (member names, overlay addresses) over the mesh, anything
// else directly from the pod's own network, so that an app whose
// ALL_PROXY points at the sidecar still reaches the world.
func (n *Node) ProxyDial(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("sidecar: dial %s: %w", address, err)
	}
	if n.inMesh(host) {
		return n.Dial(ctx, network, address)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

func (n *Node) clusterRange() netip.Prefix {
	if n.ClusterRange.IsValid() {
		return n.ClusterRange
	}
	return netip.MustParsePrefix(agent.DefaultClusterRange)
}

func (n *Node) sidecarRange() netip.Prefix {
	if n.SidecarRange.IsValid() {
		return n.SidecarRange
	}
	return netip.MustParsePrefix(agent.DefaultSidecarRange)
}
