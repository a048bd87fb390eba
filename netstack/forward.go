package netstack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/weftnet/weft/internal/splice"
)

// This file is the inbound side of a sidecar: overlay TCP connections and
// UDP datagrams to exposed ports of the stack's own addresses are
// forwarded to the kernel's loopback, where the app of the pod listens.
// Connections are spliced and tracked by internal/splice, which the
// sidecar's proxy shares.

// Defaults for the zero values of ExposeConfig.
const (
	DefaultMaxConns    = 1024
	DefaultUDPIdle     = 60 * time.Second
	DefaultDialTimeout = 10 * time.Second
)

// maxDatagram is the largest UDP payload an IPv4 or IPv6 packet without
// jumbograms carries; a flow reads into buffers this big so that no
// datagram is truncated.
const maxDatagram = 65535

// ExposeConfig says which ports of the stack's own addresses Expose
// forwards, and where to.
type ExposeConfig struct {
	// TCP and UDP are the exposed ports. A TCP connection to any other
	// port is refused with a RST; a UDP datagram to any other port gets
	// an ICMP port unreachable, as from a host with nothing listening.
	TCP []uint16
	UDP []uint16

	// Target returns the kernel address ("host:port") that connections
	// and datagrams to port of network ("tcp" or "udp") are forwarded
	// to. Nil forwards to "127.0.0.1:<port>". An empty result refuses
	// them like an unexposed port. It is called for every new TCP
	// connection and UDP flow, in the stack's packet path for UDP: it
	// must return at once.
	Target func(network string, port uint16) string

	// MaxConns bounds the forwarded TCP connections and UDP flows open
	// at once, together. Beyond it, new connections are refused with a
	// RST and datagrams of new flows are dropped. Zero means
	// DefaultMaxConns.
	MaxConns int

	// UDPIdle is how long a UDP flow may go without a datagram in either
	// direction before it is closed. Zero means DefaultUDPIdle.
	UDPIdle time.Duration

	// DialTimeout bounds connecting to the target. Zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
}

// ForwardStats counts the work of the forwarder Expose installed. All
// counts start at zero when Expose is called.
type ForwardStats struct {
	// ActiveTCP and ActiveUDP are the TCP connections and UDP flows
	// being forwarded now.
	ActiveTCP int64
	ActiveUDP int64

	// TCPTotal and UDPTotal count the TCP connections and UDP flows
	// forwarded since Expose.
	TCPTotal uint64
	UDPTotal uint64

	// Refused counts TCP connections and UDP flows turned away because
	// MaxConns was reached or the target could not be dialed. Traffic
	// to unexposed ports is not counted.
	Refused uint64
}

// Expose forwards overlay TCP connections and UDP datagrams that arrive
// for the ports in cfg on the stack's own addresses to the targets of
// cfg. A TCP handshake completes only once the target has accepted the
// connection, so an overlay client sees a refused connection as refused.
// Half-closes and resets are carried in both directions. Expose may be
// called once per stack, before traffic flows; Close stops the
// forwarding and waits for all of it.
func (s *Stack) Expose(cfg ExposeConfig) error {
	f, err := newForwarder(s, cfg)
	if err != nil {
		return err
	}
	// Holding mu for writing keeps Write, and so the packet path that
	// reads the handlers, out while they are installed.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return fmt.Errorf("netstack: expose: %w", net.ErrClosed)
	}
	if s.forward.Load() != nil {
		return fmt.Errorf("netstack: expose: ports already exposed")
	}
	tcpForwarder := tcp.NewForwarder(s.stack, 0, f.maxConns, f.forwardTCP)
	s.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		// Returning false leaves the packet to gVisor, which answers
		// it with a RST.
		return f.tcpPorts[id.LocalPort] && tcpForwarder.HandlePacket(id, pkt)
	})
	s.stack.SetTransportProtocolHandler(udp.ProtocolNumber, f.handleUDP)
	s.forward.Store(f)
	s.log.Debug("netstack: exposing ports", "tcp", cfg.TCP, "udp", cfg.UDP)
	return nil
}

// ForwardStats returns the counters of the forwarder Expose installed,
// or zeros before Expose.
func (s *Stack) ForwardStats() ForwardStats {
	f := s.forward.Load()
	if f == nil {
		return ForwardStats{}
	}
	return ForwardStats{
		ActiveTCP: f.activeTCP.Load(),
		ActiveUDP: f.activeUDP.Load(),
		TCPTotal:  f.tcpTotal.Load(),
		UDPTotal:  f.udpTotal.Load(),
		Refused:   f.refused.Load(),
	}
}

// forwarder is the state of Expose: its configuration, its connections
// and goroutines, and its counters.
type forwarder struct {
	stack              *stack.Stack
	tcpPorts, udpPorts map[uint16]bool
	target             func(network string, port uint16) string
	maxConns           int
	udpIdle            time.Duration
	dialTimeout        time.Duration
	dialer             net.Dialer
	log                *slog.Logger

	// ctx is cancelled by shutdown, ending the dials in progress.
	ctx    context.Context
	cancel context.CancelFunc
	t      splice.Tracker

	// slots is the number of TCP connections (from their SYN on) and UDP
	// flows holding one of maxConns.
	slots                atomic.Int64
	activeTCP, activeUDP atomic.Int64
	tcpTotal, udpTotal   atomic.Uint64
	refused              atomic.Uint64
}

func newForwarder(s *Stack, cfg ExposeConfig) (*forwarder, error) {
	if cfg.MaxConns < 0 || cfg.UDPIdle < 0 || cfg.DialTimeout < 0 {
		return nil, fmt.Errorf("netstack: expose: negative MaxConns %d, UDPIdle %v or DialTimeout %v",
			cfg.MaxConns, cfg.UDPIdle, cfg.DialTimeout)
	}
	f := &forwarder{
		stack:       s.stack,
		tcpPorts:    make(map[uint16]bool, len(cfg.TCP)),
		udpPorts:    make(map[uint16]bool, len(cfg.UDP)),
		target:      cfg.Target,
		maxConns:    cmp.Or(cfg.MaxConns, DefaultMaxConns),
		udpIdle:     cmp.Or(cfg.UDPIdle, DefaultUDPIdle),
		dialTimeout: cmp.Or(cfg.DialTimeout, DefaultDialTimeout),
		log:         s.log,
	}
	for _, ports := range []struct {
		network string
		list    []uint16
		set     map[uint16]bool
	}{{"tcp", cfg.TCP, f.tcpPorts}, {"udp", cfg.UDP, f.udpPorts}} {
		for _, p := range ports.list {
			if p == 0 {
				return nil, fmt.Errorf("netstack: expose: %s port 0", ports.network)
			}
			ports.set[p] = true
		}
	}
	if f.target == nil {
		f.target = func(_ string, port uint16) string {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
		}
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f, nil
}

// shutdown stops new forwards, ends the dials in progress and aborts
// every forwarded connection; wait then waits for the forwarder's
// goroutines. Stack.Close calls both before it destroys the gVisor stack.
// They do nothing on a nil forwarder.
func (f *forwarder) shutdown() {
	if f == nil {
		return
	}
	f.cancel()
	f.t.Shutdown()
}

// wait waits for every goroutine of the forwarder to return. A TCP
// handler may be in a handshake, which only ends when the endpoint is
// aborted, and one may have started its handshake just as shutdown ran.
// So until all are gone, wait aborts the stack's endpoints every few
// milliseconds, as Destroy would. Doing it here rather than leaving it
// to Destroy matters: an endpoint registered after Destroy aborted the
// others would keep it waiting forever, since Destroy also stops the TCP
// processors that run the handshake's retransmissions and timeout.
func (f *forwarder) wait() {
	if f == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.t.Wait()
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			for _, ep := range f.stack.RegisteredEndpoints() {
				ep.Abort()
			}
		}
	}
}

// acquire takes one of maxConns slots, or reports that none is free.
func (f *forwarder) acquire() bool {
	if f.slots.Add(1) > int64(f.maxConns) {
		f.slots.Add(-1)
		return false
	}
	return true
}

func (f *forwarder) release() { f.slots.Add(-1) }

// forwardTCP handles a SYN to an exposed port. tcp.Forwarder runs it on
// a goroutine of its own for each SYN; the tracker counts it from here
// on, and one that starts after shutdown only completes the request.
func (f *forwarder) forwardTCP(req *tcp.ForwarderRequest) {
	if !f.t.Enter() {
		req.Complete(false)
		return
	}
	defer f.t.Leave()
	if !f.acquire() {
		f.refused.Add(1)
		req.Complete(true)
		return
	}
	defer f.release()

	id := req.ID()
	client := net.JoinHostPort(id.RemoteAddress.String(), strconv.Itoa(int(id.RemotePort)))
	target := f.target("tcp", id.LocalPort)
	if target == "" {
		req.Complete(true)
		return
	}
	// The handshake completes only after the target accepted, so that a
	// refused target is a refused connection for the overlay client,
	// not one that opens and closes at once.
	ctx, cancel := context.WithTimeout(f.ctx, f.dialTimeout)
	local, err := f.dialer.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		f.refused.Add(1)
		f.log.Debug("netstack: forward: refused TCP connection: dial failed",
			"client", client, "port", id.LocalPort, "target", target, "err", err)
		req.Complete(f.ctx.Err() == nil) // no RST from a stack shutting down
		return
	}
	if f.ctx.Err() != nil {
		local.Close() // shutting down: no new handshake
		req.Complete(false)
		return
	}
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	req.Complete(terr != nil)
	if terr != nil {
		local.Close()
		f.log.Debug("netstack: forward: TCP handshake failed",
			"client", client, "port", id.LocalPort, "err", terr)
		return
	}
	overlay := &overlayConn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep}
	conns, ok := f.t.Track(overlay, local)
	if !ok {
		splice.Abort(overlay)
		splice.Abort(local)
		return
	}
	defer f.t.Untrack(conns)

	f.tcpTotal.Add(1)
	f.activeTCP.Add(1)
	defer f.activeTCP.Add(-1)
	splice.Conns(overlay, local)
}

// overlayConn is a TCP connection on the overlay: the overlay side of a
// forwarded connection, or one DialContext made. It can be reset like a
// *net.TCPConn, with SetLinger(0) and Close.
type overlayConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
}

// SetLinger sets SO_LINGER on the endpoint, as net.TCPConn.SetLinger
// does on a kernel socket: with sec 0, Close sends a RST.
func (c *overlayConn) SetLinger(sec int) error {
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{
		Enabled: sec >= 0,
		Timeout: time.Duration(sec) * time.Second,
	})
	return nil
}

// handleUDP is the stack's UDP handler for datagrams that no endpoint
// took: the first datagram of a flow. It runs in the packet path.
func (f *forwarder) handleUDP(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	if !f.udpPorts[id.LocalPort] {
		return false // gVisor answers with ICMP port unreachable
	}
	target := f.target("udp", id.LocalPort)
	if target == "" {
		return false
	}
	if !f.t.Enter() {
		return true // shutting down: drop
	}
	if !f.acquire() {
		f.t.Leave()
		f.refused.Add(1)
		return true
	}
	// The forwarder calls startUDPFlow before it returns, which hands
	// the slot and the tracker's count on to the flow.
	start := func(req *udp.ForwarderRequest) { f.startUDPFlow(req, target) }
	return udp.NewForwarder(f.stack, start).HandlePacket(id, pkt)
}

// startUDPFlow creates the overlay endpoint of a new flow, holding the
// slot and tracker count handleUDP took. It creates the endpoint here,
// in the packet path, so that the flow's next datagrams queue on it
// instead of starting flows of their own; everything that may block
// happens on the flow's goroutine.
func (f *forwarder) startUDPFlow(req *udp.ForwarderRequest, target string) {
	id := req.ID()
	var wq waiter.Queue
	ep, terr := req.CreateEndpoint(&wq)
	if terr != nil {
		f.refused.Add(1)
		f.release()
		f.t.Leave()
		f.log.Debug("netstack: forward: dropped UDP flow", "port", id.LocalPort, "target", target, "err", terr)
		return
	}
	overlay := gonet.NewUDPConn(&wq, ep)
	client := net.JoinHostPort(id.RemoteAddress.String(), strconv.Itoa(int(id.RemotePort)))
	go func() {
		defer f.t.Leave()
		defer f.release()
		f.runUDPFlow(overlay, client, target)
	}()
}

// runUDPFlow forwards the datagrams of one overlay client to target over
// a connected kernel socket, and the replies back, until the flow is
// idle for udpIdle or the forwarder shuts down.
func (f *forwarder) runUDPFlow(overlay *gonet.UDPConn, client, target string) {
	ctx, cancel := context.WithTimeout(f.ctx, f.dialTimeout)
	local, err := f.dialer.DialContext(ctx, "udp", target)
	cancel()
	if err != nil {
		overlay.Close()
		f.refused.Add(1)
		f.log.Debug("netstack: forward: dropped UDP flow: dial failed", "client", client, "target", target, "err", err)
		return
	}
	conns, ok := f.t.Track(overlay, local)
	if !ok {
		overlay.Close()
		local.Close()
		return
	}
	defer f.t.Untrack(conns)
	f.udpTotal.Add(1)
	f.activeUDP.Add(1)
	defer f.activeUDP.Add(-1)

	fl := &udpFlow{idle: f.udpIdle, a: overlay, b: local}
	fl.touch()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fl.copy(overlay, local)
	}()
	fl.copy(local, overlay)
	<-done
}

// udpFlow is one forwarded UDP flow: a connected overlay endpoint and a
// connected kernel socket.
type udpFlow struct {
	idle       time.Duration
	a, b       net.Conn
	lastActive atomic.Int64 // unix nanoseconds
	closeOnce  sync.Once
}

func (fl *udpFlow) touch() { fl.lastActive.Store(time.Now().UnixNano()) }

func (fl *udpFlow) close() {
	fl.closeOnce.Do(func() {
		fl.a.Close()
		fl.b.Close()
	})
}

// copy copies datagrams from src to dst until the flow has been idle for
// fl.idle or either side is closed, then closes the flow. The read
// deadline moves only when it expires, not with every datagram.
func (fl *udpFlow) copy(dst, src net.Conn) {
	defer fl.close()
	buf := make([]byte, maxDatagram)
	src.SetReadDeadline(time.Now().Add(fl.idle))
	for {
		n, err := src.Read(buf)
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				next := time.Unix(0, fl.lastActive.Load()).Add(fl.idle)
				if time.Until(next) <= 0 {
					return
				}
				src.SetReadDeadline(next)
				continue
			case errors.Is(err, syscall.ECONNREFUSED):
				// An ICMP port unreachable from the target: nothing
				// listens there (yet). The flow stays until idle, as
				// a kernel socket would.
				continue
			}
			return
		}
		fl.touch()
		// A datagram that cannot be sent is lost, as on any UDP path.
		dst.Write(buf[:n])
	}
}
