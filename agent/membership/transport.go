package membership

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// Transport is memberlist's NetTransport (v0.7.0: a TCP listener for
// push-pull and fallback probes, a UDP socket for everything else, on one
// address and port) with one change: it reads UDP into one buffer and hands
// memberlist a copy of each packet's size. NetTransport allocates a fresh
// 64 KiB buffer for every packet, since memberlist keeps the packet; a
// packet is a few hundred bytes, so in an idle agent those buffers were
// more than half of all allocation (a heap profile over a minute), and the
// collections they cost.
type Transport struct {
	tcp    *net.TCPListener
	udp    *net.UDPConn
	anyIP  bool // bound to the unspecified address
	logger *log.Logger

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	closed   atomic.Bool
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// udpRecvBuf is the socket receive buffer asked for (NetTransport's): a
// burst of gossip must not be dropped while the reader is busy.
const udpRecvBuf = 2 << 20

// NewTransport listens on addr, TCP and UDP on the same port. Port 0
// picks a free one; another process may take the UDP port between the two
// binds, so that is tried a few times, as memberlist does.
func NewTransport(addr netip.AddrPort, logger *log.Logger) (*Transport, error) {
	tries := 1
	if addr.Port() == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var t *Transport
		if t, err = listenGossip(addr, logger); err == nil {
			return t, nil
		}
	}
	return nil, err
}

func listenGossip(addr netip.AddrPort, logger *log.Logger) (*Transport, error) {
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("gossip: listen tcp %s: %w", addr, err)
	}
	port := uint16(tcp.Addr().(*net.TCPAddr).Port)
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr.Addr(), port)))
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("gossip: listen udp %s port %d: %w", addr.Addr(), port, err)
	}
	for size := udpRecvBuf; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &Transport{
		tcp: tcp, udp: udp, anyIP: addr.Addr().IsUnspecified(), logger: logger,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
	}
	t.wg.Add(2)
	go t.acceptLoop()
	go t.readLoop()
	return t, nil
}

// Port is the port both listeners are bound to.
func (t *Transport) Port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr is the address others reach this member at: the one
// configured, else the bound one, else (bound to every address) a private
// address of this host, as NetTransport picks it.
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("gossip: advertise address %q is not an IP address", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	if !t.anyIP {
		return t.tcp.Addr().(*net.TCPAddr).IP, t.Port(), nil
	}
	priv, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("gossip: find a private address to advertise: %w", err)
	}
	a := net.ParseIP(priv)
	if a == nil {
		return nil, 0, errors.New("gossip: no private IP address found; set the advertise address")
	}
	return a, t.Port(), nil
}

func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	// Members are addressed as ip:port; a name is resolved, as NetTransport
	// does.
	if ap, err := netip.ParseAddrPort(a.Addr); err == nil {
		_, err = t.udp.WriteToUDPAddrPort(b, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		return time.Now(), err
	}
	ua, err := net.ResolveUDPAddr("udp", a.Addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *Transport) StreamCh() <-chan net.Conn           { return t.streamCh }

func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", a.Addr)
}

// Shutdown closes both listeners and waits for their loops.
func (t *Transport) Shutdown() error {
	t.closed.Store(true)
	t.tcp.Close()
	t.udp.Close()
	t.wg.Wait()
	return nil
}

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed.Load() {
				return
			}
			// Out of file descriptors, say: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.logger.Printf("[ERR] memberlist: Error accepting TCP connection: %v", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		t.streamCh <- c
	}
}

// maxPacket is the largest UDP payload; memberlist sends at most its
// UDPBufferSize (1400 bytes by default), but a peer may be configured
// otherwise.
const maxPacket = 65536

func (t *Transport) readLoop() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		now := time.Now()
		if err != nil {
			if t.closed.Load() {
				return
			}
			t.logger.Printf("[ERR] memberlist: Error reading UDP packet: %v", err)
			continue
		}
		if n < 1 {
			continue
		}
		// memberlist keeps the packet (queued messages point into it).
		p := make([]byte, n)
		copy(p, buf[:n])
		// A socket bound to 0.0.0.0 is dual-stack: unmap, so the address
		// reads as memberlist's own ("198.18.0.2:7946").
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		t.packetCh <- &memberlist.Packet{Buf: p, From: net.UDPAddrFromAddrPort(from), Timestamp: now}
	}
}
