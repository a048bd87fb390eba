package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/weftnet/weft/agent/membership"
	"github.com/weftnet/weft/agent/plan"
	prom "github.com/weftnet/weft/internal/metrics"
	"github.com/weftnet/weft/tunnel"
)

// The default ranges: pod blocks of host-mode nodes, and sidecar addresses.
const (
	DefaultClusterRange = "100.64.0.0/16"
	DefaultSidecarRange = "100.127.0.0/16"
)

// Config configures an agent. Zero values get the defaults in parentheses.
type Config struct {
	// NodeName is this member's name (required; the Kubernetes node name).
	NodeName string
	// Join lists members to contact at start ("host[:port]").
	Join []string
	// Bind is the gossip address (0.0.0.0:7946).
	Bind netip.AddrPort
	// Advertise is the gossip address others use (Bind's, or the address
	// memberlist picks).
	Advertise netip.AddrPort
	// GossipKeys is the keyring, primary first. Required unless
	// InsecureGossip.
	GossipKeys     [][]byte
	InsecureGossip bool
	// GossipKeySource, when set, is read every GossipKeyReload (30 s) and
	// the local keyring made to match it (membership.SetKeyring): how an operator
	// rotates the gossip key by editing the key file or Secret.
	GossipKeySource func() ([][]byte, error)
	GossipKeyReload time.Duration
	// GossipProfile is "lan" (default), or "local" for single-machine
	// labs and tests (membership.Config.Profile).
	GossipProfile string
	// GossipTimings replaces the profile's memberlist timings where set
	// (simulations of hundreds of agents on a few cores).
	GossipTimings membership.Timings
	// PaceMembers, if set, spaces reconcile passes by the size of the mesh
	// as well as by their own duration (pacer): for simulations, where
	// every agent's passes share the same cores.
	PaceMembers int
	// Pool is the cluster range, block size and lease TTL
	// (100.64.0.0/16, /24, 10 min).
	Pool plan.LeaseConfig
	// SidecarRange is the range sidecars lease single addresses from
	// (100.127.0.0/16), by the same rules and TTL as Pool's blocks. Every
	// member must agree on it, as on Pool; it must not overlap Pool.
	SidecarRange netip.Prefix
	// Sidecar makes this member a sidecar (package sidecar): it leases one
	// address of SidecarRange, announces mode "sidecar" and carries its
	// traffic on a netstack device, with no kernel interface or route.
	Sidecar bool
	// Interface is the WireGuard link (weft0).
	Interface string
	// Mode is the tunnel backend (auto).
	Mode tunnel.Mode
	// ListenPort is WireGuard's UDP port (51820).
	ListenPort int
	// Endpoint is the underlay address peers send WireGuard to (the gossip
	// advertise address).
	Endpoint netip.Addr
	// MTU of the tunnel (1420).
	MTU int
	// StateDir holds state.json and rejoin.json (/var/lib/weft).
	StateDir string
	// Ephemeral keeps the key and lease in memory only: no state file, no
	// rejoin list (an embedded node, a sidecar whose pod restarts fresh).
	Ephemeral bool
	// SocketPath is the local API socket (/run/weft/agent.sock; "-": none).
	SocketPath string
	// MetricsAddr serves /metrics, /healthz and /readyz over TCP ("" off).
	MetricsAddr string
	// Keepalive is WireGuard's persistent keepalive for every peer (25 s;
	// negative: off). Besides keeping NAT state, it makes a new or restarted
	// node handshake with every peer at once instead of on first traffic.
	Keepalive time.Duration
	// KeyRotation rotates the WireGuard key this often (0: never).
	KeyRotation time.Duration
	// LeaveOnExit leaves the mesh when Run returns, freeing the block at
	// once (true for scale-down; a crash is a failure and keeps the block
	// for the TTL instead).
	LeaveOnExit bool
	// OnProbe, if set, is called after each of the agent's successful
	// probes of another member: about once a second in a mesh, never
	// alone. It is a wakeup the agent has anyway, for periodic work that
	// need not wake an idle agent on its own (cmd/weft: the GOMAXPROCS
	// governor). It must not block.
	OnProbe func()
	// Resync is how often the agent reconciles without a membership event
	// or a lease expiry (30 s): the repair of drift.
	Resync time.Duration
	Logger *slog.Logger
	// Registry receives the agent's metrics (a new registry if nil).
	Registry *prom.Registry
	// Now is the clock (time.Now).
	Now func() time.Time
}

// setDefaults fills in the zero fields and checks the configuration.
func (c *Config) setDefaults() error {
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return errors.New("agent: node name is empty and the hostname is unknown")
		}
		c.NodeName = h
	}
	if !c.Bind.IsValid() {
		c.Bind = netip.MustParseAddrPort("0.0.0.0:7946")
	}
	if err := c.setPools(); err != nil {
		return err
	}
	if err := c.setTunnel(); err != nil {
		return err
	}
	c.setRuntime()
	if len(c.GossipKeys) == 0 && !c.InsecureGossip {
		return membership.ErrNoGossipKey
	}
	return nil
}

// setPools fills in and checks the cluster and sidecar ranges.
func (c *Config) setPools() error {
	if !c.Pool.Range.IsValid() {
		c.Pool.Range = netip.MustParsePrefix(DefaultClusterRange)
	}
	if c.Pool.BlockBits == 0 {
		c.Pool.BlockBits = 24
	}
	if c.Pool.TTL == 0 {
		c.Pool.TTL = 10 * time.Minute
	}
	if err := c.Pool.Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if !c.SidecarRange.IsValid() {
		c.SidecarRange = netip.MustParsePrefix(DefaultSidecarRange)
	}
	if err := c.sidecarPool().Validate(); err != nil {
		return fmt.Errorf("agent: sidecar range: %w", err)
	}
	if c.SidecarRange.Overlaps(c.Pool.Range) {
		return fmt.Errorf("agent: sidecar range %s overlaps the cluster range %s", c.SidecarRange, c.Pool.Range)
	}
	return nil
}

// setTunnel fills in and checks the WireGuard device's settings.
func (c *Config) setTunnel() error {
	if c.Sidecar {
		// A sidecar has no kernel interface to carry anything else.
		if c.Mode != "" && c.Mode != tunnel.ModeAuto && c.Mode != tunnel.ModeNetstack {
			return fmt.Errorf("agent: a sidecar runs on netstack, not %s", c.Mode)
		}
		c.Mode = tunnel.ModeNetstack
	}
	if c.Interface == "" {
		c.Interface = "weft0"
	}
	if err := tunnel.ValidateInterfaceName(c.Interface); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if c.Mode == "" {
		c.Mode = tunnel.ModeAuto
	}
	if c.ListenPort == 0 {
		c.ListenPort = tunnel.DefaultListenPort
	}
	if c.MTU == 0 {
		c.MTU = 1500 - tunnel.Overhead
	}
	if err := tunnel.ValidateMTU(c.MTU); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// setRuntime fills in the paths, timers, logger, metrics and clock.
func (c *Config) setRuntime() {
	if c.StateDir == "" {
		c.StateDir = "/var/lib/weft"
	}
	if c.SocketPath == "" {
		c.SocketPath = "/run/weft/agent.sock"
	}
	switch {
	case c.Keepalive == 0:
		c.Keepalive = 25 * time.Second
	case c.Keepalive < 0:
		c.Keepalive = 0
	}
	if c.Resync == 0 {
		// Membership changes and lease expiries wake the loop themselves;
		// the resync only repairs drift (a route someone deleted).
		c.Resync = 30 * time.Second
	}
	if c.GossipKeyReload <= 0 {
		c.GossipKeyReload = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		// The process's own cost is part of what the mesh is doing:
		// process_resident_memory_bytes, process_cpu_seconds_total, go_*.
		c.Registry = prom.NewRegistry()
		c.Registry.RegisterProcess()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// sidecarPool is the lease pool of sidecars: single addresses.
func (c *Config) sidecarPool() plan.LeaseConfig {
	return plan.LeaseConfig{Range: c.SidecarRange, BlockBits: c.SidecarRange.Addr().BitLen(), TTL: c.Pool.TTL}
}

// ownPool is the pool this member leases from.
func (c *Config) ownPool() plan.LeaseConfig {
	if c.Sidecar {
		return c.sidecarPool()
	}
	return c.Pool
}

// Agent is one node's control plane.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu        sync.Mutex // guards the fields below, read by the API
	state     State
	mem       *membership.Membership
	dev       tunnel.Device
	routes    *hostRoutes
	tags      plan.Tags
	last      snapshot
	ready     bool
	readyCh   chan struct{}   // closed once ready
	conflicts []plan.Conflict // conflicts this agent lost, most recent last

	repair leaseRepair
	hold   initiationHold
	rejoin rejoinState
	bg     sync.WaitGroup // rejoinKept's tries
	hooks  testHooks
}

// leaseRepair is what the passes remember between them to repair leases.
type leaseRepair struct {
	// warned remembers which invalid members were logged, once each.
	warned map[string]string
	// told remembers failed-member notices sent (tellNewcomers), by
	// loser, winner and block.
	told map[string]time.Time
	// doubts are the failed-winner conflicts of this node's view, by
	// winner/loser, with when each was first seen (doubtFailedWinners).
	doubts    map[string]time.Time
	lastDoubt time.Time
	// avoid holds the blocks this node lost conflicts for, with when
	// (withAvoided).
	avoid map[netip.Prefix]time.Time
}

// initiationHold orders the first handshakes with new peers
// (plan.HoldInitiations): since is when each current peer was first
// wanted, and at when the next held-back handshake is due.
type initiationHold struct {
	since map[tunnel.Key]time.Time
	at    time.Time
}

// rejoinState are the gossip addresses kept for the next start (rejoin.go),
// last written at saved; running is set while rejoinKept tries them.
type rejoinState struct {
	addrs   []string
	saved   time.Time
	running atomic.Bool
}

// testHooks are what this package's tests set; all are off in the agent
// that New returns.
type testHooks struct {
	// noDevice runs membership and leases only: the many-agent simulations
	// in this package's tests, which would not fit 200 WireGuard devices.
	noDevice bool
	// noHeldAcks neither waits for nor learns from probe acks (tests of
	// the notices, which repair what acks missed).
	noHeldAcks bool
	// apiIdle replaces apiIdleTimeout.
	apiIdle time.Duration
	// transport replaces memberlist's network (partition tests).
	transport memberlist.Transport
	// passed, if set, gets each pass's snapshot and the block held after
	// it, outside the agent's lock: a simulation of 1000 agents on two
	// cores checks them without waiting on 1000 contended locks.
	passed func(snapshot, netip.Prefix)
}

// snapshot is the outcome of the last reconcile, for the API.
type snapshot struct {
	at      time.Time
	members []plan.Member
	leases  plan.Leases
	desired plan.DesiredState
	err     error
	// expiry is firstExpiry of members after at (Agent.nextExpiry).
	expiry time.Time
}

// New checks the configuration; Run does the work.
func New(cfg Config) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeName), repair: leaseRepair{warned: map[string]string{}, told: map[string]time.Time{}, doubts: map[string]time.Time{}, avoid: map[netip.Prefix]time.Time{}}, hold: initiationHold{since: map[tunnel.Key]time.Time{}}, readyCh: make(chan struct{})}
	a.metrics = newMetrics(cfg.Registry, a)
	return a, nil
}

func (a *Agent) statePath() string { return filepath.Join(a.cfg.StateDir, "state.json") }

// saveState persists st, unless the agent is ephemeral.
func (a *Agent) saveState(st State) error {
	if a.cfg.Ephemeral {
		return nil
	}
	return SaveState(a.statePath(), st)
}

// Ready is closed once the agent holds a lease and its device is up.
func (a *Agent) Ready() <-chan struct{} { return a.readyCh }

// Device is the agent's WireGuard device, nil before Ready.
func (a *Agent) Device() tunnel.Device {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dev
}

// Address is this member's own overlay address (the node address of its
// block, or a sidecar's single address); invalid before it holds a lease.
func (a *Agent) Address() netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.state.Block.IsValid() {
		return netip.Addr{}
	}
	return plan.NodeAddress(a.state.Block)
}

// Members is the agent's current view of the mesh.
func (a *Agent) Members() []plan.Member {
	a.mu.Lock()
	mem := a.mem
	a.mu.Unlock()
	if mem == nil {
		return nil
	}
	return mem.Members()
}

// loadIdentity reads the state file, or starts fresh (new key, no block)
// when there is none or it belongs to something else.
func (a *Agent) loadIdentity() error {
	st, err := LoadState(a.statePath(), a.cfg.NodeName)
	if a.cfg.Ephemeral {
		st, err = State{}, os.ErrNotExist
	}
	pool := a.cfg.ownPool()
	switch {
	case err == nil:
		if st.Block.IsValid() && (st.Range != pool.Range || st.Block.Bits() != pool.BlockBits) {
			a.log.Warn("dropping the persisted lease: the cluster range changed", "block", st.Block, "old_range", st.Range, "range", pool.Range)
			st.Block, st.Range, st.LeaseTime = netip.Prefix{}, netip.Prefix{}, 0
		}
		a.log.Info("state loaded", "key", st.Key, "block", st.Block)
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrStateMismatch):
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("ignoring a state file that is not ours", "err", err)
		}
		k, gerr := tunnel.GeneratePrivateKey()
		if gerr != nil {
			return gerr
		}
		st = State{NodeName: a.cfg.NodeName, Key: k}
		a.log.Info("new identity", "key", k)
	default:
		return err
	}
	if err := a.saveState(st); err != nil {
		return err
	}
	a.state = st
	return nil
}
