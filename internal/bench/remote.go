package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"
)

// This file is `weft bench server` and `weft bench client`: the same
// measurement between two real pods of a cluster, where there is no lab.
// The protocol is weft's own and tiny, so a pod image needs nothing but
// weft: a connection starts with one byte saying what it is for.
const (
	// connPing: the client writes one byte at a time and waits for it to
	// come back; the median round trip is the RTT.
	connPing = 'p'
	// connData: the client writes until it half-closes; the server answers
	// with the number of bytes it received (8 bytes, big endian).
	connData = 'd'
)

// DefaultPort is where `weft bench server` listens (iperf3's port).
const DefaultPort = 5201

// Serve answers bench clients on l until ctx ends or l fails.
func Serve(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			closeOnCancel := context.AfterFunc(ctx, func() { c.Close() })
			defer closeOnCancel()
			serveConn(c)
		}()
	}
}

func serveConn(c net.Conn) {
	var kind [1]byte
	if _, err := io.ReadFull(c, kind[:]); err != nil {
		return
	}
	switch kind[0] {
	case connPing:
		io.Copy(c, c)
	case connData:
		n, _ := io.Copy(io.Discard, c)
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		c.Write(b[:])
	}
}

// Client measures the path to a bench server at target (host:port): the
// RTT of one-byte round trips over TCP, then TCP throughput for each
// stream count, dur each. The results are labelled mode.
func Client(ctx context.Context, target, mode string, streams []int, dur time.Duration) (Report, error) {
	rep := Report{Machine: machine()}
	rtt, err := tcpRTT(ctx, target, 20)
	if err != nil {
		return rep, err
	}
	for _, s := range streams {
		gbps, err := sendStreams(ctx, target, s, dur)
		if err != nil {
			return rep, err
		}
		rep.Results = append(rep.Results, Result{Mode: mode, Path: "pod-to-pod", Streams: s, Gbps: gbps, RTTus: rtt, Tool: "go"})
	}
	return rep, nil
}

func dialKind(ctx context.Context, target string, kind byte) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, fmt.Errorf("bench server %s: %w", target, err)
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, fmt.Errorf("bench server %s: %w", target, err)
	}
	return c, nil
}

// tcpRTT is the median of n one-byte round trips, in microseconds.
func tcpRTT(ctx context.Context, target string, n int) (float64, error) {
	c, err := dialKind(ctx, target, connPing)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var rtts []time.Duration
	b := []byte{0}
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return 0, fmt.Errorf("ping %s: %w", target, err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, fmt.Errorf("ping %s: %w", target, err)
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	return float64(rtts[len(rtts)/2].Nanoseconds()) / 1e3, nil
}

// sendStreams writes to the server over `streams` connections for dur and
// returns what the server says it received over the time until it said so.
func sendStreams(ctx context.Context, target string, streams int, dur time.Duration) (float64, error) {
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < streams; i++ {
		c, err := dialKind(ctx, target, connData)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
	}
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	counts := make([]uint64, streams)
	errs := make([]error, streams)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			c.SetWriteDeadline(deadline)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					break // the deadline, usually
				}
			}
			c.SetWriteDeadline(time.Time{})
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			var b [8]byte
			if _, err := io.ReadFull(c, b[:]); err != nil {
				errs[i] = fmt.Errorf("stream %d: server's count: %w", i, err)
				return
			}
			counts[i] = binary.BigEndian.Uint64(b[:])
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	var total uint64
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return 0, fmt.Errorf("bench server %s received nothing", target)
	}
	return float64(total) * 8 / elapsed.Seconds() / 1e9, nil
}

// ServeIperf3 runs `iperf3 -s` on port until ctx ends.
func ServeIperf3(ctx context.Context, port int, out io.Writer) error {
	c := exec.CommandContext(ctx, "iperf3", "-s", "-p", strconv.Itoa(port))
	c.Stdout, c.Stderr = out, out
	err := c.Run()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ClientIperf3 is Client with iperf3 against `iperf3 -s` at host:port; the
// RTT is iperf3's mean smoothed TCP RTT of the first run's streams.
func ClientIperf3(ctx context.Context, host string, port int, mode string, streams []int, dur time.Duration) (Report, error) {
	rep := Report{Machine: machine()}
	for _, s := range streams {
		secs := strconv.Itoa(max(1, int(dur.Round(time.Second).Seconds())))
		out, err := exec.CommandContext(ctx, "iperf3", "-c", host, "-p", strconv.Itoa(port),
			"-t", secs, "-P", strconv.Itoa(s), "-J").Output()
		var r iperfReport
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			return rep, fmt.Errorf("iperf3 -c %s: %v", host, errors.Join(err, jerr))
		}
		if r.Error != "" {
			return rep, fmt.Errorf("iperf3 -c %s: %s", host, r.Error)
		}
		rep.Results = append(rep.Results, Result{Mode: mode, Path: "pod-to-pod", Streams: s,
			Gbps: r.End.SumReceived.BitsPerSecond / 1e9, RTTus: r.meanRTT(), Tool: "iperf3"})
	}
	return rep, nil
}
