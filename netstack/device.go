package netstack

import (
	"fmt"
	"os"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// This file is the tun.Device side of Stack: the packets wireguard-go moves
// between the stack and its peers.

// File returns nil: the device has no file descriptor.
func (s *Stack) File() *os.File { return nil }

// Name returns "netstack".
func (s *Stack) Name() (string, error) { return "netstack", nil }

// MTU returns the MTU the stack was configured with.
func (s *Stack) MTU() (int, error) { return s.mtu, nil }

// BatchSize returns the most packets one Read returns.
func (s *Stack) BatchSize() int { return batchSize }

// Events returns a channel that never carries an event and is closed by
// Close. It sends no tun.EventUp: the caller decides when the wireguard-go
// device comes up (device.Up), and wireguard-go would act on an EventUp by
// bringing it up on its own.
func (s *Stack) Events() <-chan tun.Event { return s.events }

// Read blocks until the stack sends a packet, then copies it and up to
// len(bufs)-1 more already queued packets into bufs, each starting at
// offset, and their lengths into sizes. It returns os.ErrClosed once the
// stack is closed.
func (s *Stack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	n := 0
	for n == 0 {
		// Close cancels readCtx before anything else, so a Read that
		// finds the queue closed also finds readCtx done.
		if s.readCtx.Err() != nil {
			return 0, os.ErrClosed
		}
		pkt := s.ep.ReadContext(s.readCtx)
		for pkt != nil {
			if s.copyOut(pkt, bufs[n], offset, &sizes[n]) {
				n++
			}
			if n == len(bufs) {
				break
			}
			pkt = s.ep.Read()
		}
	}
	return n, nil
}

// copyOut copies pkt into buf at offset, sets size and releases pkt. It
// drops a packet that does not fit: returning an error would make
// wireguard-go close the whole device.
func (s *Stack) copyOut(pkt *stack.PacketBuffer, buf []byte, offset int, size *int) bool {
	defer pkt.DecRef()
	if offset > len(buf) || pkt.Size() > len(buf)-offset {
		s.log.Debug("netstack: dropped outbound packet larger than read buffer",
			"size", pkt.Size(), "buffer", len(buf)-offset)
		return false
	}
	dst := buf[offset:]
	n := 0
	for _, v := range pkt.AsSlices() {
		n += copy(dst[n:], v)
	}
	*size = n
	return true
}

// Write hands the packets in bufs, each starting at offset, to the stack
// as if they had arrived on its interface. Packets that are not IPv4 or
// IPv6 are dropped and reported in the error after the rest are delivered.
// Write returns os.ErrClosed once the stack is closed.
func (s *Stack) Write(bufs [][]byte, offset int) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return 0, os.ErrClosed
	}
	dropped := 0
	for _, buf := range bufs {
		if offset > len(buf) {
			dropped++
			continue
		}
		packet := buf[offset:]
		if len(packet) == 0 {
			continue
		}
		var proto = header.IPv4ProtocolNumber
		switch header.IPVersion(packet) {
		case header.IPv4Version:
		case header.IPv6Version:
			proto = header.IPv6ProtocolNumber
		default:
			dropped++
			continue
		}
		// MakeWithData copies: wireguard-go reuses bufs once Write
		// returns, while TCP may hold the payload in its queues.
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(packet)})
		s.ep.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
	if dropped > 0 {
		return len(bufs), fmt.Errorf("netstack: write: dropped %d of %d packets that are not IPv4 or IPv6", dropped, len(bufs))
	}
	return len(bufs), nil
}
