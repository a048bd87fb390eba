package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/bench"
	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/tunnel"
)

// echoPort is where every pod runs its echo server.
const echoPort = "7000"

// traffic makes every pod talk to every other and moves a hashed transfer
// from a pod on the first node to a pod on the second, with a capture on
// the first node's underlay running throughout; then checks the capture.
func (d *demo) traffic(ctx context.Context) error {
	var all []*netlab.Pod
	for _, ps := range d.pods {
		all = append(all, ps...)
	}
	stopEcho, err := serveEcho(all)
	if err != nil {
		return err
	}
	defer stopEcho()

	d.step("pod to pod: every pair (%d connections), then %d MiB %s -> %s with a hash check",
		len(all)*(len(all)-1), d.o.TransferMiB, d.pods[0][0].Name, d.pods[1][0].Name)
	failed := 0
	for _, from := range all {
		for _, to := range all {
			if from == to {
				continue
			}
			msg := marker + " " + from.Name + " -> " + to.Name
			if err := echo(ctx, from, net.JoinHostPort(to.Addr().String(), echoPort), msg); err != nil {
				failed++
				d.fail("%s (%s) -> %s (%s): %v", from.Name, from.Addr(), to.Name, to.Addr(), err)
				if failed == 1 {
					d.diagnose(ctx)
				}
			}
		}
	}
	if failed == 0 {
		d.ok("every pod reached every other pod (%d echoes, same node and across nodes)", len(all)*(len(all)-1))
	}
	path := &bench.Path{Name: "pods", A: side(d.pods[0][0]), B: side(d.pods[1][0])}
	start := time.Now()
	terr := transfer(ctx, path, int64(d.o.TransferMiB)<<20)
	took := time.Since(start)
	d.stopCapture()
	if terr != nil {
		d.fail("transfer %s -> %s: %v", path.A.Addr, path.B.Addr, terr)
	} else {
		d.ok("%d MiB %s -> %s: sha256 matches on both ends (%.2f Gbit/s with the capture running)",
			d.o.TransferMiB, path.A.Addr, path.B.Addr, float64(d.o.TransferMiB)*8*(1<<20)/took.Seconds()/1e9)
	}
	d.sum = append(d.sum, fmt.Sprintf("pods: %d added through the CNI plugin; %d/%d pod-to-pod echoes; hashed transfer %s",
		len(all), len(all)*(len(all)-1)-failed, len(all)*(len(all)-1), okOr(terr)))
	st, err := d.mesh.Agents[0].Status()
	if err != nil {
		return err
	}
	d.step("checking the capture of %s's underlay: from before the agents joined until now", d.lab.Nodes[0].Name)
	d.checkCapture(d.pcap, memberKeys(st))
	return nil
}

// diagnose prints what each node's kernel and agent hold right now: the
// weft routes, the WireGuard peers with their allowed IPs and handshakes,
// and the end of the agent's log. It runs once, at the first failed check,
// so that a failure that does not repeat still says where it was.
func (d *demo) diagnose(ctx context.Context) {
	for _, a := range d.mesh.Agents {
		n := a.Node
		routes, err := n.Run(ctx, "ip", "route", "show", "proto", "0x77")
		if err != nil {
			routes = err.Error()
		}
		wg, err := n.Run(ctx, "wg", "show", a.Interface())
		if err != nil {
			wg = err.Error()
		}
		d.info("--- %s: ip route show proto 0x77 ---\n%s", n.Name, indent(routes))
		d.info("--- %s: wg show %s ---\n%s", n.Name, a.Interface(), indent(wg))
		d.info("--- %s: agent log (tail) ---\n%s", n.Name, indent(a.LogTail()))
	}
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ")
}

func okOr(err error) string {
	if err != nil {
		return "FAILED"
	}
	return "ok"
}

// checkCapture: the plaintext marker never appears, no packet carries a
// pod address in its IP header, everything is WireGuard UDP or the agents'
// gossip, and the gossip never shows a member's public key in clear (the
// tags carry them: unencrypted gossip would).
func (d *demo) checkCapture(file string, keys []string) {
	b, err := os.ReadFile(file)
	if err != nil {
		d.fail("read capture: %v", err)
		return
	}
	wg := fmt.Sprintf("udp port %d", tunnel.DefaultListenPort)
	gossip := fmt.Sprintf("port %d", netlab.AgentPort)
	count := func(filter string) ([]string, error) { return netlab.PcapMatch(file, filter) }
	total, err1 := count("")
	wgPkts, err2 := count(wg)
	gossipPkts, err3 := count(gossip)
	clear, err4 := count("net 100.64.0.0/10")
	// A handshake sent before the peer's device listens comes back as ICMP
	// port unreachable quoting it (still encrypted): the UDP destination
	// port of the quoted packet is at offset 8 (ICMP) + 20 (IP) + 2.
	unreach := fmt.Sprintf("icmp[icmptype] == icmp-unreach and icmp[30:2] == %d", tunnel.DefaultListenPort)
	icmp, err5 := count(unreach)
	// Link-local multicast of the lab's own links (IGMP, MLD, neighbour
	// discovery) carries no pod data.
	other, err6 := count(fmt.Sprintf("not (%s) and not %s and not (%s) and not arp and not ip multicast and not ip6 multicast", wg, gossip, unreach))
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		d.fail("read capture: %v", err)
		return
	}
	fails := len(d.fails)
	if n := bytes.Count(b, []byte(marker)); n != 0 {
		d.fail("the plaintext marker appears %d times on the underlay", n)
	}
	if len(clear) != 0 {
		d.fail("%d underlay packets carry a pod address in the clear, e.g. %s", len(clear), clear[0])
	}
	if len(other) != 0 {
		d.fail("%d underlay packets are neither WireGuard nor gossip, e.g.\n      %s", len(other), strings.Join(other[:min(5, len(other))], "\n      "))
	}
	if len(wgPkts) < 100 {
		d.fail("only %d WireGuard packets captured: the pods' traffic went some other way", len(wgPkts))
	}
	if len(gossipPkts) == 0 {
		d.fail("no gossip captured: the capture missed the agents joining")
	}
	for _, k := range keys {
		if bytes.Contains(b, []byte(k)) {
			d.fail("gossip carries public key %s in clear: not encrypted", k)
		}
	}
	if len(d.fails) == fails {
		d.ok("underlay: %d packets: %d WireGuard UDP (%s), %d encrypted gossip (%s), %d ICMP unreachable quoting WireGuard, 0 other",
			len(total), len(wgPkts), wg, len(gossipPkts), gossip, len(icmp))
		d.ok("the plaintext marker and the members' public keys (gossip tags) never appear in clear")
	}
	d.sum = append(d.sum, fmt.Sprintf("underlay capture on %s: %d packets, %d WireGuard, %d gossip, %d other, marker in clear: %v",
		d.lab.Nodes[0].Name, len(total), len(wgPkts), len(gossipPkts), len(other), bytes.Contains(b, []byte(marker))))
}

// throughput measures one pod on the first node sending to one on the
// second: iperf3 when installed, else the built-in Go sender.
func (d *demo) throughput(ctx context.Context) error {
	a, b := d.pods[0][0], d.pods[1][0]
	p := &bench.Path{Name: "pods", A: side(a), B: side(b)}
	const dur = 3 * time.Second
	tool := "iperf3"
	var th bench.Throughput
	var err error
	if bench.HaveIperf3() {
		d.step("throughput %s -> %s (iperf3, 1 stream, %v)", a.Name, b.Name, dur)
		th, err = bench.Iperf3(ctx, &a.Node, &b.Node, b.Addr(), 1, dur)
	} else {
		tool = "go"
		d.step("throughput %s -> %s (built-in Go sender: iperf3 is not installed; 1 stream, %v)", a.Name, b.Name, dur)
		th, err = bench.GoThroughput(ctx, p, 1, dur)
	}
	if err != nil {
		d.fail("throughput: %v", err)
		return nil
	}
	rtt, err := bench.Ping(ctx, p)
	if err != nil {
		d.fail("ping %s -> %s: %v", b.Addr(), a.Addr(), err)
	}
	st, _ := d.mesh.Agents[0].Status()
	d.ok("%.2f Gbit/s, RTT %.0f µs (weft %s mode, pod to pod across nodes)", th.Gbps, rtt, st.Self.Mode)
	d.sum = append(d.sum, fmt.Sprintf("throughput %s -> %s: %.2f Gbit/s (%s, 1 stream), RTT %.0f µs", a.Name, b.Name, th.Gbps, tool, rtt))
	return nil
}

// serveEcho runs an echo server on echoPort in every pod.
func serveEcho(pods []*netlab.Pod) (stop func(), err error) {
	var ls []net.Listener
	var wg sync.WaitGroup
	stop = func() {
		for _, l := range ls {
			l.Close()
		}
		wg.Wait()
	}
	for _, p := range pods {
		l, err := p.Listen("tcp", net.JoinHostPort(p.Addr().String(), echoPort))
		if err != nil {
			stop()
			return nil, fmt.Errorf("echo server in %s: %w", p.Name, err)
		}
		ls = append(ls, l)
		bench.ServeConns(l, &wg, func(c net.Conn) {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.Copy(c, io.LimitReader(c, 1<<16))
		})
	}
	return stop, nil
}

// echo sends msg from pod p to addr and expects it back, retrying briefly
// (the first packet to a new peer may wait for its handshake).
func echo(ctx context.Context, p *netlab.Pod, addr, msg string) error {
	var err error
	for try := 0; try < 3; try++ {
		if err = echoOnce(ctx, p, addr, msg); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

func echoOnce(ctx context.Context, p *netlab.Pod, addr, msg string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := p.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != msg {
		return fmt.Errorf("got %q back", b)
	}
	return nil
}

// transfer sends size bytes of marked pseudo-random data from A to B and
// compares the SHA-256 of what left with what arrived.
func transfer(ctx context.Context, p *bench.Path, size int64) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	l, err := p.B.Node.Listen("tcp", net.JoinHostPort(p.B.Addr.String(), "0"))
	if err != nil {
		return err
	}
	defer l.Close()
	type result struct {
		sum []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		_, err = io.Copy(h, c)
		got <- result{h.Sum(nil), err}
	}()
	c, err := p.A.Node.DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		return err
	}
	h := sha256.New()
	src := &markedRand{left: size, rng: rand.NewChaCha8([32]byte{7})}
	if _, err := io.Copy(io.MultiWriter(c, h), src); err != nil {
		c.Close()
		return fmt.Errorf("send: %w", err)
	}
	c.Close()
	select {
	case r := <-got:
		if r.err != nil {
			return fmt.Errorf("receive: %w", r.err)
		}
		if !bytes.Equal(r.sum, h.Sum(nil)) {
			return errors.New("received data does not match what was sent")
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// markedRand is pseudo-random data with the marker every 4 KiB.
type markedRand struct {
	left int64
	rng  *rand.ChaCha8
}

func (m *markedRand) Read(b []byte) (int, error) {
	if m.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > m.left {
		b = b[:m.left]
	}
	m.rng.Read(b)
	for i := 0; i+len(marker) <= len(b); i += 4096 {
		copy(b[i:], marker)
	}
	m.left -= int64(len(b))
	return len(b), nil
}

// capture runs tcpdump on the node's eth0 into a file in dir until stop.
func capture(ctx context.Context, n *netlab.Node, dir string) (file string, stop func(), err error) {
	c, err := netlab.StartCapture(ctx, n, "eth0", filepath.Join(dir, "underlay-"+n.Name+".pcap"), 0)
	if err != nil {
		return "", nil, err
	}
	return c.File, c.Stop, nil
}
