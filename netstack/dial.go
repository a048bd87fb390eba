package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// This file is the socket side of Stack: connections of programs in this
// process to and from the overlay. Errors from the stack come back as
// *net.OpError wrapping the errno package net would give (connect:
// connection refused, bind: address already in use), so callers branch
// on them with errors.Is as they do for kernel sockets.

// listenBacklog matches gonet.ListenTCP and Linux's default somaxconn.
const listenBacklog = 4096

// DialContext connects to address on network through the stack. network
// is tcp, tcp4, tcp6, udp, udp4 or udp6; address is a literal "ip:port"
// (the stack does no name resolution). ctx bounds the TCP handshake.
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	transport, family, err := parseNetwork("dial", network)
	if err != nil {
		return nil, err
	}
	remote, err := parseAddress("dial", network, address, family, false)
	if err != nil {
		return nil, err
	}
	if transport == "tcp" {
		return s.dialTCP(ctx, network, remote)
	}
	return s.dialUDP(ctx, network, remote)
}

func (s *Stack) dialTCP(ctx context.Context, network string, remote netip.AddrPort) (net.Conn, error) {
	opError := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(remote), Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, opError(err)
	}
	var wq waiter.Queue
	// Connect completes (or fails) by making the endpoint writable.
	entry, connected := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	s.mu.RLock()
	if s.closed.Load() {
		s.mu.RUnlock()
		return nil, opError(net.ErrClosed)
	}
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, networkProtocol(remote.Addr()), &wq)
	if terr == nil {
		terr = ep.Connect(fullAddress(remote))
	}
	s.mu.RUnlock()
	if ep == nil {
		return nil, opError(syscallError("socket", terr))
	}

	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, opError(ctx.Err())
		case <-connected:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, opError(syscallError("connect", terr))
	}
	// Resettable (SetLinger(0) + Close sends a RST), so that the proxies
	// carry a client's reset to the overlay.
	return &overlayConn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep}, nil
}

func (s *Stack) dialUDP(ctx context.Context, network string, remote netip.AddrPort) (net.Conn, error) {
	opError := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: net.UDPAddrFromAddrPort(remote), Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, opError(err)
	}
	var wq waiter.Queue
	s.mu.RLock()
	if s.closed.Load() {
		s.mu.RUnlock()
		return nil, opError(net.ErrClosed)
	}
	ep, terr := s.stack.NewEndpoint(udp.ProtocolNumber, networkProtocol(remote.Addr()), &wq)
	if terr == nil {
		terr = ep.Connect(fullAddress(remote))
	}
	s.mu.RUnlock()
	if ep == nil {
		return nil, opError(syscallError("socket", terr))
	}
	if terr != nil {
		ep.Close()
		return nil, opError(syscallError("connect", terr))
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// Listen listens for TCP connections on the stack. network is tcp, tcp4
// or tcp6; address is "ip:port" with one of the stack's addresses, or
// ":port" for all of them (port 0 picks a free port).
func (s *Stack) Listen(network, address string) (net.Listener, error) {
	transport, family, err := parseNetwork("listen", network)
	if err != nil {
		return nil, err
	}
	if transport != "tcp" {
		return nil, fmt.Errorf("netstack: listen %s: unsupported network (want tcp, tcp4 or tcp6; use ListenPacket for udp)", network)
	}
	local, err := parseAddress("listen", network, address, family, true)
	if err != nil {
		return nil, err
	}
	var wq waiter.Queue
	ep, err := s.bind(tcp.ProtocolNumber, network, family, local, &wq)
	if err != nil {
		return nil, err
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "listen", Net: network, Addr: net.TCPAddrFromAddrPort(local), Err: syscallError("listen", terr)}
	}
	return gonet.NewTCPListener(s.stack, &wq, ep), nil
}

// ListenPacket opens a UDP socket on the stack. network is udp, udp4 or
// udp6; address is "ip:port" with one of the stack's addresses, or ":port"
// for all of them (port 0 picks a free port).
func (s *Stack) ListenPacket(network, address string) (net.PacketConn, error) {
	transport, family, err := parseNetwork("listen", network)
	if err != nil {
		return nil, err
	}
	if transport != "udp" {
		return nil, fmt.Errorf("netstack: listen packet %s: unsupported network (want udp, udp4 or udp6; use Listen for tcp)", network)
	}
	local, err := parseAddress("listen", network, address, family, true)
	if err != nil {
		return nil, err
	}
	var wq waiter.Queue
	ep, err := s.bind(udp.ProtocolNumber, network, family, local, &wq)
	if err != nil {
		return nil, err
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// bind creates an endpoint of transport bound to local. Without a local
// address it listens on every family network allows: "tcp" or "udp" on a
// stack with IPv6 gets a dual-stack IPv6 endpoint, "tcp6" and "udp6" get
// an IPv6-only one, as with package net.
func (s *Stack) bind(transport tcpip.TransportProtocolNumber, network string, family byte, local netip.AddrPort, wq *waiter.Queue) (tcpip.Endpoint, error) {
	addr := net.Addr(net.UDPAddrFromAddrPort(local))
	if transport == tcp.ProtocolNumber {
		addr = net.TCPAddrFromAddrPort(local)
	}
	opError := func(err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: addr, Err: err}
	}

	proto := ipv4.ProtocolNumber
	v6only := false
	switch {
	case local.Addr().IsValid():
		proto = networkProtocol(local.Addr())
	case family == 6:
		proto, v6only = ipv6.ProtocolNumber, true
	case family == 0 && s.hasV6:
		proto = ipv6.ProtocolNumber
	}

	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return nil, opError(net.ErrClosed)
	}
	ep, terr := s.stack.NewEndpoint(transport, proto, wq)
	if terr != nil {
		return nil, opError(syscallError("socket", terr))
	}
	if v6only {
		ep.SocketOptions().SetV6Only(true)
	}
	full := tcpip.FullAddress{Port: local.Port()}
	if local.Addr().IsValid() {
		full = fullAddress(local)
	}
	if terr := ep.Bind(full); terr != nil {
		ep.Close()
		return nil, opError(syscallError("bind", terr))
	}
	return ep, nil
}

// parseNetwork splits network into its transport ("tcp" or "udp") and
// the address family it requires (4, 6, or 0 for either).
func parseNetwork(op, network string) (transport string, family byte, err error) {
	switch network {
	case "tcp", "udp":
		return network, 0, nil
	case "tcp4", "udp4":
		return network[:3], 4, nil
	case "tcp6", "udp6":
		return network[:3], 6, nil
	}
	return "", 0, fmt.Errorf("netstack: %s %s: unsupported network (want tcp, tcp4, tcp6, udp, udp4 or udp6)", op, network)
}

// parseAddress parses a literal "ip:port" of family (0 for either). With
// listen, the IP may be left out (":port") and the port may be 0; the
// result then has no valid Addr.
func parseAddress(op, network, address string, family byte, listen bool) (netip.AddrPort, error) {
	fail := func(format string, args ...any) (netip.AddrPort, error) {
		return netip.AddrPort{}, fmt.Errorf("netstack: %s %s %q: %s", op, network, address, fmt.Sprintf(format, args...))
	}
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		var addrErr *net.AddrError
		if errors.As(err, &addrErr) {
			return fail("%s", addrErr.Err)
		}
		return fail("%v", err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return fail("port %q is not a number 0..65535", portText)
	}
	if port == 0 && !listen {
		return fail("port 0")
	}
	if host == "" {
		if !listen {
			return fail("no IP (the stack does no name resolution; give a literal ip:port)")
		}
		return netip.AddrPortFrom(netip.Addr{}, uint16(port)), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fail("host %q is not an IP literal (the stack does no name resolution)", host)
	}
	if ip.Zone() != "" {
		return fail("IPv6 zones are not supported")
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() {
		if !listen {
			return fail("unspecified IP")
		}
		ip = netip.Addr{}
	}
	switch {
	case family == 4 && !ip.Is4() && ip.IsValid():
		return fail("not an IPv4 address")
	case family == 6 && !ip.Is6() && ip.IsValid():
		return fail("not an IPv6 address")
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

func networkProtocol(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddress(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}

// syscallError turns a gVisor error into the error a kernel socket's
// call would return, so errors.Is(err, syscall.ECONNREFUSED) and friends
// work; errors without an errno counterpart keep gVisor's text.
func syscallError(call string, err tcpip.Error) error {
	var errno syscall.Errno
	switch err.(type) {
	case *tcpip.ErrConnectionRefused:
		errno = syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		errno = syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		errno = syscall.ECONNABORTED
	case *tcpip.ErrTimeout:
		errno = syscall.ETIMEDOUT
	case *tcpip.ErrNetworkUnreachable, *tcpip.ErrNoNet:
		errno = syscall.ENETUNREACH
	case *tcpip.ErrHostUnreachable, *tcpip.ErrHostDown:
		errno = syscall.EHOSTUNREACH
	case *tcpip.ErrPortInUse:
		errno = syscall.EADDRINUSE
	case *tcpip.ErrBadLocalAddress:
		errno = syscall.EADDRNOTAVAIL
	case *tcpip.ErrNoPortAvailable:
		errno = syscall.EAGAIN
	case *tcpip.ErrInvalidEndpointState:
		errno = syscall.EINVAL
	default:
		return fmt.Errorf("%s: %s", call, err)
	}
	return os.NewSyscallError(call, errno)
}
