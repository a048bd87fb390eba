package netstack

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestReadBatchesQueuedPackets(t *testing.T) {
	s := newStack(t, 1420, addrA)
	if got := s.BatchSize(); got <= 1 {
		t.Fatalf("BatchSize() = %d, want > 1", got)
	}
	c, err := s.DialContext(context.Background(), "udp", "100.64.0.2:9999")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 10
	for i := range sent {
		if _, err := c.Write(make([]byte, 100+i)); err != nil {
			t.Fatal(err)
		}
	}

	bufs := make([][]byte, s.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, wgOffset+1420)
		for j := range wgOffset {
			bufs[i][j] = 0xAA
		}
	}
	sizes := make([]int, len(bufs))
	n, err := s.Read(bufs, sizes, wgOffset)
	if err != nil {
		t.Fatal(err)
	}
	if n != sent {
		t.Fatalf("Read returned %d packets, want all %d queued", n, sent)
	}
	for i := range n {
		if want := header.IPv4MinimumSize + header.UDPMinimumSize + 100 + i; sizes[i] != want {
			t.Errorf("packet %d: size %d, want %d", i, sizes[i], want)
		}
		ip := header.IPv4(bufs[i][wgOffset : wgOffset+sizes[i]])
		if !ip.IsValid(sizes[i]) {
			t.Fatalf("packet %d: not a valid IPv4 packet", i)
		}
		src, dst := ip.SourceAddress().String(), ip.DestinationAddress().String()
		if src != "100.64.0.1" || dst != "100.64.0.2" {
			t.Errorf("packet %d: %s -> %s, want 100.64.0.1 -> 100.64.0.2", i, src, dst)
		}
		for j := range wgOffset {
			if bufs[i][j] != 0xAA {
				t.Fatalf("packet %d: Read wrote byte %d, before offset %d", i, j, wgOffset)
			}
		}
	}

	// A batch smaller than the queue takes only what fits.
	for range 3 {
		c.Write([]byte("x"))
	}
	if n, err := s.Read(bufs[:2], sizes, wgOffset); n != 2 || err != nil {
		t.Errorf("Read into 2 buffers = %d, %v; want 2, nil", n, err)
	}
	if n, err := s.Read(bufs, sizes, wgOffset); n != 1 || err != nil {
		t.Errorf("Read of the rest = %d, %v; want 1, nil", n, err)
	}
}

func TestWriteDropsNonIP(t *testing.T) {
	s := newStack(t, 1420, addrA)
	bufs := [][]byte{
		make([]byte, wgOffset+20),                        // version 0
		append(make([]byte, wgOffset), 0x45, 0, 0, 0x14), // truncated IPv4: the stack drops it
		make([]byte, wgOffset),                           // empty: skipped
	}
	n, err := s.Write(bufs, wgOffset)
	if err == nil {
		t.Errorf("Write of a non-IP packet: no error")
	}
	if n != len(bufs) {
		t.Errorf("Write = %d, want %d", n, len(bufs))
	}
}

func TestCloseStopsEverything(t *testing.T) {
	defer goleak.VerifyNone(t)
	s, err := New(Config{Addresses: []netip.Addr{addrA}, MTU: 1420})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	// A dial that nobody answers, and a Read that waits for a packet,
	// must both end when the stack closes.
	dialErr := make(chan error, 1)
	go func() {
		_, err := s.DialContext(context.Background(), "tcp", "100.64.0.9:80")
		dialErr <- err
	}()
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	s.Read(bufs, sizes, 0) // the SYN
	readErr := make(chan error, 1)
	go func() {
		_, err := s.Read(bufs, sizes, 0)
		readErr <- err
	}()
	time.Sleep(20 * time.Millisecond)

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("blocked Read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked Read did not return after Close")
	}
	select {
	case err := <-dialErr:
		if err == nil {
			t.Errorf("pending dial: connected after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending dial did not return after Close")
	}
	if _, err := ln.Accept(); err == nil {
		t.Errorf("Accept after Close: no error")
	}
	ln.Close()
	if _, err := s.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v, want os.ErrClosed", err)
	}
	if _, err := s.Write([][]byte{make([]byte, 20)}, 0); err == nil {
		t.Errorf("Write after Close: no error")
	}
	if _, ok := <-s.Events(); ok {
		t.Errorf("Events after Close: got an event, want a closed channel")
	}
	if _, err := s.DialContext(context.Background(), "tcp", "100.64.0.2:80"); err == nil {
		t.Errorf("DialContext after Close: no error")
	}
	if _, err := s.Listen("tcp", ":81"); err == nil {
		t.Errorf("Listen after Close: no error")
	}
}
