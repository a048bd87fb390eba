package kubejoin

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/internal/kubeapi"
)

// Defaults for Config's zero values.
const (
	DefaultMax      = 5
	DefaultSelector = "kubernetes.io/os=linux"
	DefaultTimeout  = 15 * time.Second
)

// NodeLister is the one request Discover makes; *kubeapi.Client is one.
type NodeLister interface {
	ListNodes(ctx context.Context, selector string) (*corev1.NodeList, error)
}

// Config says whose Nodes to list and how many join addresses to keep.
type Config struct {
	// Client is the Kubernetes API. When nil, one is made from Kubeconfig,
	// or from the pod's service account (in-cluster) when that is empty.
	Client     NodeLister
	Kubeconfig string
	// Self is this node's name: it is never a join address.
	Self string
	// Port is the gossip port on every node (7946).
	Port int
	// Max bounds the addresses returned (DefaultMax). Joining one live
	// member is enough; a few guard against some of them being down.
	Max int
	// Selector picks the Nodes that run agents (DefaultSelector: Linux
	// nodes; "-" for all).
	Selector string
	// Timeout bounds the whole call, connection included (DefaultTimeout).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Discover lists the Nodes once and returns up to Max gossip addresses
// ("ip:port") of other nodes, as Candidates picks them. An empty list with
// no error means this is the only node: the agent starts the mesh.
func Discover(ctx context.Context, cfg Config) ([]string, error) {
	if cfg.Self == "" {
		return nil, errors.New("join addresses from Kubernetes: this node's name is unknown (--node-name or $NODE_NAME)")
	}
	if cfg.Port == 0 {
		cfg.Port = 7946
	}
	if cfg.Max <= 0 {
		cfg.Max = DefaultMax
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	sel := cfg.Selector
	switch sel {
	case "":
		sel = DefaultSelector
	case "-":
		sel = ""
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client := cfg.Client
	if client == nil {
		c, err := NewClient(cfg.Kubeconfig, cfg.Timeout)
		if err != nil {
			return nil, fmt.Errorf("join addresses from Kubernetes: %w", err)
		}
		// The agent makes no other request: leave no connection behind.
		defer c.CloseIdleConnections()
		client = c
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	nodes, err := client.ListNodes(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("join addresses from Kubernetes: list nodes (selector %q, timeout %s): %w", sel, cfg.Timeout, err)
	}
	addrs := Candidates(cfg.Self, nodes.Items, cfg.Port, cfg.Max)
	log.Info("join addresses from Kubernetes", "nodes", len(nodes.Items), "join", addrs, "took", time.Since(start).Round(time.Millisecond))
	return addrs, nil
}

// Candidates picks up to max gossip addresses among nodes: the
// InternalIP of every node but self that is not being deleted and whose
// kubelet has not gone silent (Ready Unknown: the node controller's
// verdict on a node it cannot hear). Nodes whose Ready is False are kept:
// at a cluster's first install every node is NotReady until a CNI plugin
// is there, and those are exactly the agents to find. Ready nodes come
// first. Within each group the order is a hash of self and the node's
// name (rendezvous hashing): stable for a node across restarts, different
// from node to node, so joins spread over the cluster instead of piling
// onto the same few members.
func Candidates(self string, nodes []corev1.Node, port, max int) []string {
	type cand struct {
		addr  string
		ready bool
		rank  uint64
	}
	var cs []cand
	seen := map[string]bool{}
	for i := range nodes {
		n := &nodes[i]
		if n.Name == self || n.DeletionTimestamp != nil {
			continue
		}
		ready, known := readiness(n)
		if !known {
			continue
		}
		ip := internalIP(n)
		if ip == "" || seen[ip] {
			continue
		}
		seen[ip] = true
		cs = append(cs, cand{net.JoinHostPort(ip, strconv.Itoa(port)), ready, rank(self, n.Name)})
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.ready != b.ready {
			if a.ready {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.addr, b.addr))
	})
	out := []string{}
	for _, c := range cs[:min(len(cs), max)] {
		out = append(out, c.addr)
	}
	return out
}

// readiness reports the node's Ready condition; known is false when the
// node controller set it to Unknown (the kubelet stopped reporting). A node
// without the condition yet has just registered: not ready, but known.
func readiness(n *corev1.Node) (ready, known bool) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, c.Status != corev1.ConditionUnknown
		}
	}
	return false, true
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && net.ParseIP(a.Address) != nil {
			return a.Address
		}
	}
	return ""
}

// rank orders node for self. SHA-256, not FNV: names that differ only in
// their last characters (node-17, node-18) must still land far apart.
func rank(self, node string) uint64 {
	sum := sha256.Sum256([]byte(self + "\x00" + node))
	return binary.BigEndian.Uint64(sum[:8])
}

// NewClient returns a client for the apiserver named in kubeconfig, or,
// when kubeconfig is empty, for the cluster the process runs in (the pod's
// service account). Every request it makes times out after timeout.
func NewClient(kubeconfig string, timeout time.Duration) (*kubeapi.Client, error) {
	var cfg kubeapi.Config
	var err error
	if kubeconfig != "" {
		if cfg, err = kubeapi.LoadKubeconfig(kubeconfig); err != nil {
			return nil, err
		}
	} else if cfg, err = kubeapi.InCluster(); err != nil {
		return nil, fmt.Errorf("in-cluster config (run in a pod with a service account, or give a kubeconfig): %w", err)
	}
	cfg.Timeout = timeout
	cfg.UserAgent = "weft-agent"
	c, err := kubeapi.New(cfg)
	if err != nil {
		if kubeconfig != "" {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		return nil, fmt.Errorf("in-cluster config: %w", err)
	}
	return c, nil
}
