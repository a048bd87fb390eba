package membership

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func newTestTransport(t *testing.T, bind string) *Transport {
	t.Helper()
	gt, err := NewTransport(netip.MustParseAddrPort(bind), log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gt.Shutdown() })
	return gt
}

func nextPacket(t *testing.T, gt *Transport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-gt.PacketCh():
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet within 5s")
		return nil
	}
}

// Each packet arrives as its own slice of its own size, from the sender's
// address as memberlist writes it, and a later packet (read into the same
// buffer) leaves it alone. The receiver is bound to [::], a dual-stack
// socket as with --bind [::]:7946: the IPv4 sender still reads as
// 127.0.0.1:port, the address memberlist knows it by.
func TestGossipTransportPackets(t *testing.T) {
	rx := newTestTransport(t, "[::]:0")
	tx := newTestTransport(t, "127.0.0.1:0")
	to := fmt.Sprintf("127.0.0.1:%d", rx.Port())
	first, second := bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{2}, 1200)
	if _, err := tx.WriteTo(first, to); err != nil {
		t.Fatal(err)
	}
	p1 := nextPacket(t, rx)
	if _, err := tx.WriteToAddress(second, memberlist.Address{Addr: to, Name: "rx"}); err != nil {
		t.Fatal(err)
	}
	p2 := nextPacket(t, rx)
	if !bytes.Equal(p1.Buf, first) || !bytes.Equal(p2.Buf, second) {
		t.Fatalf("got packets of %d and %d bytes, first starting %v", len(p1.Buf), len(p2.Buf), p1.Buf[:min(4, len(p1.Buf))])
	}
	if cap(p1.Buf) != len(first) {
		t.Errorf("a %d-byte packet holds a %d-byte buffer", len(first), cap(p1.Buf))
	}
	if want := fmt.Sprintf("127.0.0.1:%d", tx.Port()); p1.From.String() != want {
		t.Errorf("packet from %s, want %s", p1.From, want)
	}
	if time.Since(p1.Timestamp) > time.Minute {
		t.Errorf("timestamp %v", p1.Timestamp)
	}
}

// Streams (push-pull, fallback probes) are TCP on the same port.
func TestGossipTransportStreams(t *testing.T) {
	rx := newTestTransport(t, "127.0.0.1:0")
	tx := newTestTransport(t, "127.0.0.1:0")
	c, err := tx.DialTimeout(fmt.Sprintf("127.0.0.1:%d", rx.Port()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("push-pull")); err != nil {
		t.Fatal(err)
	}
	var in net.Conn
	select {
	case in = <-rx.StreamCh():
	case <-time.After(5 * time.Second):
		t.Fatal("no stream within 5s")
	}
	defer in.Close()
	buf := make([]byte, 9)
	if _, err := io.ReadFull(in, buf); err != nil || string(buf) != "push-pull" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if _, err := tx.DialTimeout("127.0.0.1:1", time.Second); err == nil {
		t.Error("a dial to a closed port succeeded")
	}
}

func TestGossipTransportAdvertise(t *testing.T) {
	bound := newTestTransport(t, "127.0.0.1:0")
	for _, tc := range []struct {
		ip       string
		port     int
		want     string
		wantPort int
		err      bool
	}{
		{ip: "198.18.0.7", port: 7000, want: "198.18.0.7", wantPort: 7000},
		{ip: "::ffff:198.18.0.7", port: 7000, want: "198.18.0.7", wantPort: 7000},
		{ip: "", want: "127.0.0.1", wantPort: bound.Port()},
		{ip: "not-an-ip", err: true},
	} {
		ip, port, err := bound.FinalAdvertiseAddr(tc.ip, tc.port)
		if tc.err {
			if err == nil {
				t.Errorf("%q: no error", tc.ip)
			}
			continue
		}
		if err != nil || ip.String() != tc.want || port != tc.wantPort {
			t.Errorf("%q, %d: got %v %d %v, want %s %d", tc.ip, tc.port, ip, port, err, tc.want, tc.wantPort)
		}
	}
}

// A taken port is an error that names it, not a silent other port.
func TestGossipTransportPortTaken(t *testing.T) {
	gt := newTestTransport(t, "127.0.0.1:0")
	if _, err := NewTransport(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(gt.Port())), log.New(io.Discard, "", 0)); err == nil {
		t.Fatal("a second transport bound the same port")
	}
}
