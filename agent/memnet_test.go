package agent

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// memNetwork is an in-memory network for memberlist, for simulations too
// big for loopback sockets on two cores. Unlike memberlist.MockNetwork it
// behaves like the real one when a member is gone: packets to it are lost
// (UDP), dials to it are refused, and a full receive queue drops instead of
// blocking the sender.
type memNetwork struct {
	mu     sync.RWMutex
	byAddr map[string]*memTransport
	port   int
}

// memTransport is one member's end of a memNetwork.
type memTransport struct {
	net      *memNetwork
	addr     *net.UDPAddr
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	once     sync.Once
}

var errRefused = errors.New("memnet: connection refused")

func (n *memNetwork) newTransport() *memTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byAddr == nil {
		n.byAddr = map[string]*memTransport{}
	}
	n.port++
	t := &memTransport{
		net:      n,
		addr:     &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10000 + n.port},
		packetCh: make(chan *memberlist.Packet, 256),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
	}
	n.byAddr[t.addr.String()] = t
	return t
}

func (n *memNetwork) lookup(addr string) *memTransport {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.byAddr[addr]
}

func (t *memTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.addr.IP, t.addr.Port, nil
}

func (t *memTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	dst := t.net.lookup(addr)
	if dst == nil {
		return now, nil // lost, as UDP to nobody is
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: t.addr, Timestamp: now}
	select {
	case <-dst.done:
	case dst.packetCh <- p:
	default: // receiver's queue is full: dropped
	}
	return now, nil
}

func (t *memTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *memTransport) StreamCh() <-chan net.Conn           { return t.streamCh }

func (t *memTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	dst := t.net.lookup(addr)
	if dst == nil {
		return nil, fmt.Errorf("dial %s: %w", addr, errRefused)
	}
	local, remote := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dst.streamCh <- remote:
		return local, nil
	case <-dst.done:
	case <-t.done:
	case <-timer.C:
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("dial %s: %w", addr, errRefused)
}

func (t *memTransport) Shutdown() error {
	t.once.Do(func() {
		t.net.mu.Lock()
		delete(t.net.byAddr, t.addr.String())
		t.net.mu.Unlock()
		close(t.done)
	})
	return nil
}
