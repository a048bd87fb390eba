package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// streamAcross runs a steady TCP stream from a to b over the overlay (node
// addresses) from sockets the test owns; it returns a counter of bytes
// received and a stop function that reports a broken stream.
func streamAcross(t *testing.T, a, b *agentProc) (*atomic.Int64, func() error) {
	t.Helper()
	src, dst := nodeAddressWhenReady(t, a), nodeAddressWhenReady(t, b)
	var l net.Listener
	if err := b.node.Do(func() error {
		var err error
		l, err = net.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var received atomic.Int64
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	var conn net.Conn
	eventually(t, 20*time.Second, "stream connects", func() error {
		return a.node.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 2 * time.Second}
			var err error
			conn, err = d.Dial("tcp", l.Addr().String())
			return err
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	sendErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 16<<10)
		for ctx.Err() == nil {
			conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := conn.Write(buf); err != nil {
				sendErr <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
		sendErr <- nil
	}()
	return &received, func() error {
		cancel()
		err := <-sendErr
		conn.Close()
		l.Close()
		return err
	}
}

// Issue 4: WireGuard key rotation on a schedule does not break an
// established TCP stream between two nodes, and is counted.
func TestKeyRotationKeepsStream(t *testing.T) {
	lab := needLab(t, 2)
	key := writeGossipKey(t)
	n1 := startAgent(t, lab, lab.Nodes[0], key, nil)
	n2 := startAgent(t, lab, lab.Nodes[1], key, lab.Nodes[0], "--key-rotation", "3s")
	st, _ := n2.status()
	firstKey := st.Self.PublicKey
	received, stop := streamAcross(t, n1, n2)
	time.Sleep(10 * time.Second) // three rotations under the stream
	mark := received.Load()
	eventually(t, 20*time.Second, "stream still flowing", func() error {
		if got := received.Load(); got < mark+1<<20 {
			return fmt.Errorf("%d bytes in the last stretch", got-mark)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("stream broke during key rotation: %v", err)
	}
	st, _ = n2.status()
	if st.Self.PublicKey == firstKey {
		t.Errorf("key never rotated")
	}
	m := regexp.MustCompile(`(?m)^weft_key_rotations_total (\d+)`).FindStringSubmatch(n2.metrics())
	if m == nil {
		t.Fatalf("no weft_key_rotations_total in metrics")
	}
	if n, _ := strconv.Atoi(m[1]); n < 2 {
		t.Errorf("weft_key_rotations_total = %d, want >= 2", n)
	}
	// n1 follows: its peer for n2 carries n2's current key.
	eventually(t, 10*time.Second, "n1 knows n2's new key", func() error {
		s1, err := n1.status()
		if err != nil {
			return err
		}
		s2, _ := n2.status()
		for _, m := range s1.Members {
			if m.Name == "n2" && m.PublicKey == s2.Self.PublicKey && m.Peer != nil {
				return nil
			}
		}
		return fmt.Errorf("n1 does not peer with n2's current key")
	})
}
