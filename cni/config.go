package cni

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Defaults for the fields of NetConf a conflist may leave out.
const (
	// DefaultAgentSocket is where the node's agent serves its local API.
	DefaultAgentSocket = "/run/weft/agent.sock"
	// DefaultDataDir is the address store: one file per allocated address,
	// the layout of host-local, so its tools and habits apply.
	DefaultDataDir = "/var/lib/cni/networks/weft"
)

// GatewayAddr is the link-local next hop every pod routes through. It is
// never on the wire: each pod has a permanent neighbour entry mapping it to
// the MAC of its host veth (the calico pattern), so the host needs neither
// an address per veth nor proxy ARP, and the pod's routes are the same on
// every node.
var GatewayAddr = netip.MustParseAddr("169.254.1.1")

// NetConf is weft's plugin configuration: the standard keys plus where to
// find the agent and the address store.
type NetConf struct {
	types.NetConf
	// AgentSocket is the agent's local API socket.
	AgentSocket string `json:"agentSocket,omitempty"`
	// DataDir is the address store directory.
	DataDir string `json:"dataDir,omitempty"`
	// MTU overrides the MTU the agent reports; 0 takes the agent's.
	MTU int `json:"mtu,omitempty"`
}

// ParseNetConf decodes and validates the plugin configuration from stdin,
// filling in defaults. Errors are CNI errors with the spec's codes.
func ParseNetConf(data []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "weft: decode network config", err.Error())
	}
	if c.AgentSocket == "" {
		c.AgentSocket = DefaultAgentSocket
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	invalid := func(format string, args ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, "weft: "+fmt.Sprintf(format, args...), "")
	}
	switch {
	case c.Name == "":
		return nil, invalid("missing network name")
	case !filepath.IsAbs(c.AgentSocket) || strings.ContainsRune(c.AgentSocket, 0):
		return nil, invalid("agentSocket %q: want an absolute path", c.AgentSocket)
	case !filepath.IsAbs(c.DataDir) || strings.ContainsRune(c.DataDir, 0):
		return nil, invalid("dataDir %q: want an absolute path", c.DataDir)
	case filepath.Clean(c.DataDir) == "/":
		return nil, invalid("dataDir %q: want a directory of its own", c.DataDir)
	case c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535):
		// 576: the smallest MTU an IPv4 host must accept (RFC 791).
		return nil, invalid("mtu %d: want 576-65535, or 0 for the agent's", c.MTU)
	}
	c.DataDir = filepath.Clean(c.DataDir)
	return c, nil
}
