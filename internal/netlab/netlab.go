// Package netlab builds weft's multi-node lab: N network namespaces, each an
// underlay "node" with an address in 198.18.0.0/15, joined by a bridge that
// lives in a namespace of its own, so the root namespace is never touched.
// Every namespace it makes is named weft-<lab id>-..., and Close removes them.
// Tests, `weft demo` and `weft bench` stand on it.
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
)

// NetnsDir is where `ip netns` keeps its named namespaces.
const NetnsDir = "/var/run/netns"

// NamePrefix starts the name of everything a lab creates.
const NamePrefix = "weft-"

// Config describes a lab.
type Config struct {
	// Nodes is how many nodes to create (at least 1).
	Nodes int
	// MTU of the underlay links; 0 means 1500.
	MTU int
	// Logger; nil discards.
	Logger *slog.Logger
}

// Lab is a running lab.
type Lab struct {
	// ID is the random part of every name in this lab.
	ID string
	// Switch is the namespace holding the bridge.
	Switch string
	Nodes  []*Node
	log    *slog.Logger
	// closers run first in Close (OnClose).
	closers []func()
}

// Node is one lab node: a network namespace with eth0 on the underlay.
type Node struct {
	// Name is the short node name, n1, n2, ...
	Name string
	// NS is the namespace name (weft-<id>-n1); `ip netns exec NS ...` enters it.
	NS string
	// Underlay is eth0's address.
	Underlay netip.Prefix
	// Port is the node's end on the bridge, in the switch namespace.
	Port string
}

// Addr is the node's underlay address.
func (n *Node) Addr() netip.Addr { return n.Underlay.Addr() }

// Path is the namespace's bind-mount path.
func (n *Node) Path() string { return filepath.Join(NetnsDir, n.NS) }

// Do runs fn on a thread inside the node's namespace. Sockets, links and TUN
// devices created in fn belong to the node.
func (n *Node) Do(fn func() error) error {
	return ns.WithNetNSPath(n.Path(), func(ns.NetNS) error { return fn() })
}

// Listen opens a listener inside the node's namespace (the socket stays
// there whatever thread later uses it).
func (n *Node) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// DialContext connects from inside the node's namespace.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Command returns `ip netns exec <ns> name args...`.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NS, name}, args...)...)
}

// Run runs a command in the node and returns its combined output.
func (n *Node) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.NS, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// UnderlayAddr is node i's (1-based) address on the lab underlay.
func UnderlayAddr(i int) netip.Prefix {
	base := netip.MustParseAddr("198.18.0.0").As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(i)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 15)
}

// New builds a lab. On error, whatever was made is removed again.
func New(ctx context.Context, cfg Config) (*Lab, error) {
	if cfg.Nodes < 1 || cfg.Nodes > 60000 {
		return nil, fmt.Errorf("netlab: %d nodes: want 1-60000", cfg.Nodes)
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var b [3]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	l := &Lab{ID: id, Switch: NamePrefix + id + "-sw", log: cfg.Logger}
	if err := l.build(ctx, cfg); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context, cfg Config) error {
	if err := addNetns(ctx, l.Switch); err != nil {
		return err
	}
	mtu := fmt.Sprint(cfg.MTU)
	if err := ipBatch(ctx, l.Switch, []string{
		"link set lo up",
		"link add br0 mtu " + mtu + " type bridge",
		"link set br0 up",
	}); err != nil {
		return err
	}
	for i := 1; i <= cfg.Nodes; i++ {
		n := &Node{Name: fmt.Sprintf("n%d", i), Underlay: UnderlayAddr(i)}
		n.NS = NamePrefix + l.ID + "-" + n.Name
		n.Port = n.Name
		if err := addNetns(ctx, n.NS); err != nil {
			return err
		}
		l.Nodes = append(l.Nodes, n)
		if err := ipBatch(ctx, l.Switch, []string{
			fmt.Sprintf("link add %s mtu %s type veth peer name eth0 mtu %s netns %s", n.Port, mtu, mtu, n.NS),
			fmt.Sprintf("link set %s master br0 up", n.Port),
		}); err != nil {
			return err
		}
		if err := ipBatch(ctx, n.NS, []string{
			"link set lo up",
			"addr add " + n.Underlay.String() + " dev eth0",
			"link set eth0 up",
		}); err != nil {
			return err
		}
	}
	l.log.Debug("lab up", "id", l.ID, "nodes", cfg.Nodes)
	return nil
}

// Close removes every namespace of the lab (their links go with them),
// pods a Runtime did not detach included.
func (l *Lab) Close() error {
	for i := len(l.closers) - 1; i >= 0; i-- {
		l.closers[i]()
	}
	l.closers = nil
	var errs []error
	for _, n := range l.Nodes {
		errs = append(errs, delNetns(n.NS))
	}
	errs = append(errs, delNetns(l.Switch))
	for _, name := range labNamespaces(NamePrefix + l.ID + "-") {
		errs = append(errs, delNetns(name))
	}
	// A userspace device whose agent was killed leaves its UAPI socket in
	// the one directory all lab nodes share; the device died with its
	// namespace, so the socket is stale.
	socks, _ := filepath.Glob(filepath.Join(uapiDir, "wf"+l.ID+"-*.sock"))
	for _, s := range socks {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// OnClose has Close call fn first, before the namespaces go, last
// registered first: what holds a namespace open (a netlink socket bound in
// it, as a fault injector's) must let go of it there.
func (l *Lab) OnClose(fn func()) { l.closers = append(l.closers, fn) }

// Logger is the lab's logger.
func (l *Lab) Logger() *slog.Logger { return l.log }

// uapiDir is where wireguard-go and wgctrl keep userspace devices' sockets.
const uapiDir = "/var/run/wireguard"

// Cleanup removes every namespace whose name starts with NamePrefix: what a
// crashed run left behind. It returns the names it removed.
func Cleanup() ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), NamePrefix) {
			continue
		}
		if err := delNetns(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

func addNetns(ctx context.Context, name string) error {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("netlab: ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func delNetns(name string) error {
	if _, err := os.Stat(filepath.Join(NetnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("netlab: ip netns del %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipBatch runs `ip -n ns -batch -` with the given commands.
func ipBatch(ctx context.Context, netns string, cmds []string) error {
	c := exec.CommandContext(ctx, "ip", "-n", netns, "-batch", "-")
	c.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("netlab: in %s: %w: %s", netns, err, strings.TrimSpace(string(out)))
	}
	return nil
}
