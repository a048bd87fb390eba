package netstack

import (
	"context"
	"io"
	"net/netip"
	"testing"
)

// BenchmarkTCPThroughput measures one TCP flow from stack a to stack b
// through the in-memory pumps: the cost of gVisor on both ends plus the
// tun.Device batching, without crypto or UDP. Compare with the tun
// backend's benchmark for the share of the WireGuard path it takes.
func BenchmarkTCPThroughput(b *testing.B) {
	const chunk = 1 << 20
	sa, sb := newPair(b, []netip.Addr{addrA}, []netip.Addr{addrB})
	ln, err := sb.Listen("tcp", "100.64.0.2:5201")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	received := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		received <- n
	}()
	c, err := sa.DialContext(context.Background(), "tcp", "100.64.0.2:5201")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, chunk)

	b.SetBytes(chunk)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(data); err != nil {
			b.Fatal(err)
		}
	}
	// The time counts until the last byte has arrived, not just been
	// queued.
	c.(interface{ CloseWrite() error }).CloseWrite()
	n := <-received
	b.StopTimer()
	if want := int64(b.N) * chunk; n != want {
		b.Fatalf("received %d bytes, want %d", n, want)
	}
}
