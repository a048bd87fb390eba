package netstack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// MinMTU and MaxMTU bound Config.MTU. 576 is the smallest datagram every
// IPv4 host must accept (RFC 791); 65535 is the largest an IP length field
// can describe.
const (
	MinMTU = 576
	MaxMTU = 65535
)

const (
	// nicID is the stack's only NIC, the one wireguard-go reads and writes.
	nicID tcpip.NICID = 1

	// outboundQueueLen is how many packets the stack may queue for Read.
	// channel.Endpoint drops a packet when its queue is full, and TCP then
	// has to recover it, so the queue holds a full send window at MTU 1420
	// and 8 MiB buffers rather than wireguard-go's 1024.
	outboundQueueLen = 8192

	// batchSize is the most packets Read returns at once. wireguard-go
	// sizes its buffers by it and encrypts a batch in parallel.
	batchSize = 64

	// tcpBufferMax is the largest a TCP send or receive buffer may grow to.
	// gVisor's default of 4 MiB caps a single flow well below what the
	// stack can move on one core; moderation grows buffers only as needed.
	tcpBufferMax = 8 << 20
)

// Config configures a Stack.
type Config struct {
	// Addresses are the stack's own overlay addresses, IPv4 or IPv6. At
	// least one is required; a default route is added for each family
	// present.
	Addresses []netip.Addr

	// MTU is the MTU of the device, between MinMTU and MaxMTU.
	MTU int

	// Logger receives the stack's log records. Nil discards them.
	Logger *slog.Logger
}

// Stack is a userspace TCP/IP stack behind a tun.Device. Create it with New
// and release it with Close.
type Stack struct {
	stack  *stack.Stack
	ep     *channel.Endpoint
	mtu    int
	hasV4  bool
	hasV6  bool
	log    *slog.Logger
	events chan tun.Event

	// readCtx is cancelled by Close to wake a Read blocked on the queue.
	readCtx    context.Context
	cancelRead context.CancelFunc

	// mu is held for reading while a packet or a new endpoint enters the
	// stack, and for writing by Close, so nothing enters a stack that is
	// being torn down.
	mu        sync.RWMutex
	closed    atomic.Bool
	closeOnce sync.Once

	// forward is the forwarder Expose installed, or nil.
	forward atomic.Pointer[forwarder]
}

var _ tun.Device = (*Stack)(nil)

// New validates cfg and starts a stack with cfg.Addresses on its device.
func New(cfg Config) (*Stack, error) {
	if len(cfg.Addresses) == 0 {
		return nil, fmt.Errorf("netstack: no addresses configured")
	}
	if cfg.MTU < MinMTU || cfg.MTU > MaxMTU {
		return nil, fmt.Errorf("netstack: MTU %d out of range %d..%d", cfg.MTU, MinMTU, MaxMTU)
	}
	addrs := make([]netip.Addr, 0, len(cfg.Addresses))
	for _, a := range cfg.Addresses {
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("netstack: invalid address %q", a)
		}
		addrs = append(addrs, a.Unmap())
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	s := &Stack{
		stack: stack.New(stack.Options{
			NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
			TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
			// Connections to the stack's own addresses stay inside it
			// instead of going out to the peers.
			HandleLocal: true,
		}),
		ep:     channel.New(outboundQueueLen, uint32(cfg.MTU), ""),
		mtu:    cfg.MTU,
		log:    log,
		events: make(chan tun.Event),
	}
	s.readCtx, s.cancelRead = context.WithCancel(context.Background())
	if err := s.setUp(addrs); err != nil {
		s.Close()
		return nil, err
	}
	log.Debug("netstack up", "addresses", addrs, "mtu", cfg.MTU)
	return s, nil
}

// setUp tunes TCP, creates the NIC and gives it addrs and default routes.
func (s *Stack) setUp(addrs []netip.Addr) error {
	sack := tcpip.TCPSACKEnabled(true) // off by default in gVisor
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	send := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcpBufferMax}
	recv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: tcpBufferMax}
	options := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"SACK", &sack},
		{"receive buffer moderation", &moderate},
		{"send buffer range", &send},
		{"receive buffer range", &recv},
	}
	for _, o := range options {
		if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); err != nil {
			return fmt.Errorf("netstack: set TCP %s: %v", o.name, err)
		}
	}

	if err := s.stack.CreateNIC(nicID, s.ep); err != nil {
		return fmt.Errorf("netstack: create NIC: %v", err)
	}
	for _, a := range addrs {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if err := s.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("netstack: add address %s: %v", a, err)
		}
		if a.Is4() {
			s.hasV4 = true
		} else {
			s.hasV6 = true
		}
	}
	// Everything not local goes to wireguard-go, which picks the peer by
	// its allowed IPs.
	if s.hasV4 {
		s.stack.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	if s.hasV6 {
		s.stack.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	return nil
}

// ReplaceAddress moves the stack from address old to address new of the
// same family (a node that re-leased): connections on old end, new ones
// use new. Replacing an address with itself does nothing.
func (s *Stack) ReplaceAddress(old, new netip.Addr) error {
	old, new = old.Unmap(), new.Unmap()
	if old == new {
		return nil
	}
	if !new.IsValid() || new.IsUnspecified() || new.IsMulticast() || new.Is4() != old.Is4() {
		return fmt.Errorf("netstack: replace %s with %s: want an address of the same family", old, new)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return fmt.Errorf("netstack: replace %s: stack closed", old)
	}
	proto := ipv4.ProtocolNumber
	if new.Is6() {
		proto = ipv6.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(new.AsSlice()).WithPrefix()}
	if err := s.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("netstack: add address %s: %v", new, err)
	}
	if err := s.stack.RemoveAddress(nicID, tcpip.AddrFromSlice(old.AsSlice())); err != nil {
		return fmt.Errorf("netstack: remove address %s: %v", old, err)
	}
	s.log.Info("netstack address replaced", "old", old, "new", new)
	return nil
}

// Close stops the stack: it aborts every connection, forwarded ones
// included, waits for gVisor's workers and the forwarder's goroutines to
// exit, wakes a blocked Read and closes Events. Close is
// idempotent and always returns nil.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.cancelRead()
		s.mu.Lock()
		s.closed.Store(true)
		s.mu.Unlock()

		// The forwarder stops before the stack is destroyed, so that
		// none of its handshakes starts while Destroy runs.
		fwd := s.forward.Load()
		fwd.shutdown()
		fwd.wait()
		// Destroy aborts all endpoints, stops the TCP processors and
		// removes the NIC, and waits for all of it.
		s.stack.Destroy()
		s.ep.Close() // drops queued packets; Read sees a closed queue
		close(s.events)
	})
	return nil
}
