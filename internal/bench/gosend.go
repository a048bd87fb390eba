package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// GoThroughput is the built-in sender and receiver, for paths iperf3 cannot
// use (side A in a userspace stack) or machines without iperf3: side A opens
// `streams` TCP connections to a receiver in side B and writes for dur; the
// receiver counts what arrives.
func GoThroughput(ctx context.Context, p *Path, streams int, dur time.Duration) (Throughput, error) {
	l, err := p.B.Node.Listen("tcp", net.JoinHostPort(p.B.Addr.String(), "0"))
	if err != nil {
		return Throughput{}, fmt.Errorf("receiver: %w", err)
	}
	defer l.Close()
	var received atomic.Int64
	var wg sync.WaitGroup
	ServeConns(l, &wg, func(c net.Conn) {
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	dial := func(ctx context.Context) (net.Conn, error) {
		if p.A.Stack != nil {
			return p.A.Stack.DialContext(ctx, "tcp", l.Addr().String())
		}
		return p.A.Node.DialContext(ctx, "tcp", l.Addr().String())
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		l.Close()
		wg.Wait()
	}()
	for i := 0; i < streams; i++ {
		c, err := dial(ctx)
		if err != nil {
			return Throughput{}, fmt.Errorf("sender: %w", err)
		}
		conns = append(conns, c)
	}
	start := time.Now()
	deadline := start.Add(dur)
	var sw sync.WaitGroup
	for _, c := range conns {
		sw.Add(1)
		go func() {
			defer sw.Done()
			c.SetWriteDeadline(deadline)
			buf := make([]byte, 256<<10)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	sw.Wait()
	got := received.Load()
	elapsed := time.Since(start)
	if got == 0 {
		return Throughput{}, fmt.Errorf("nothing arrived in %v: %w", elapsed, io.ErrUnexpectedEOF)
	}
	return Throughput{Streams: streams, Gbps: float64(got) * 8 / elapsed.Seconds() / 1e9}, nil
}

// ServeConns accepts connections on l until it is closed and runs handle
// on each, on a goroutine of its own that closes the connection after.
// wg counts the accepting goroutine and every handler, so that closing l
// and waiting on wg stops them all.
func ServeConns(l net.Listener, wg *sync.WaitGroup, handle func(net.Conn)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
}
