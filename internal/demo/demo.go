// Package demo is `weft demo`: it builds a namespace lab, joins the nodes
// with weft's userspace tunnel, proves the path works and is encrypted, and
// cleans up, printing what it does as it goes.
package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/bench"
	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/tunnel"
)

// Options for a demo run.
type Options struct {
	// Mode of the tunnel (tun by default: the one every Linux box has).
	Mode tunnel.Mode
	// TransferMiB is the size of the hashed TCP transfer.
	TransferMiB int
	// Keep leaves the lab up until ctx is cancelled.
	Keep   bool
	Out    io.Writer
	Logger *slog.Logger
}

// marker is plaintext the transfer carries; the underlay capture must not.
const marker = "WEFT-DEMO-PLAINTEXT"

// Run runs the demo. It returns an error if any check fails.
func Run(ctx context.Context, o Options) (err error) {
	if o.Mode == "" {
		o.Mode = tunnel.ModeTUN
	}
	if o.TransferMiB == 0 {
		o.TransferMiB = 64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := o.Out
	step := func(format string, a ...any) { fmt.Fprintf(w, "==> "+format+"\n", a...) }
	ok := func(format string, a ...any) { fmt.Fprintf(w, "    ok: "+format+"\n", a...) }

	step("building a 2-node lab (network namespaces on a bridge, underlay 198.18.0.0/15)")
	lab, err := netlab.New(ctx, netlab.Config{Nodes: 2, Logger: o.Logger})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := lab.Close(); cerr != nil && err == nil {
			err = cerr
		}
		fmt.Fprintln(w, "==> lab removed")
	}()
	for _, n := range lab.Nodes {
		ok("node %s: netns %s, eth0 %s", n.Name, n.NS, n.Underlay)
	}

	step("bringing up weft %s devices and peering them", o.Mode)
	path, devs, err := bench.WeftPair(ctx, lab, o.Mode, 1500-tunnel.Overhead, o.Logger)
	if err != nil {
		return err
	}
	defer path.Close()
	for i, d := range devs {
		ok("%s: %s device %s, overlay %s, key %s", lab.Nodes[i].Name, d.Mode(), d.Name(), []bench.Side{path.A, path.B}[i].Addr, tunnel.Fingerprint(d.PublicKey()))
	}

	step("ping across the tunnel")
	rtt, err := bench.Ping(ctx, path)
	if err != nil {
		return err
	}
	ok("%s -> %s: avg RTT %.0f µs", path.A.Addr, path.B.Addr, rtt)

	step("moving %d MiB over TCP while capturing the underlay", o.TransferMiB)
	pcap, stop, err := capture(ctx, lab.Nodes[0])
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(pcap))
	start := time.Now()
	if err := transfer(ctx, path, int64(o.TransferMiB)<<20); err != nil {
		stop()
		return err
	}
	took := time.Since(start)
	stop()
	ok("sha256 matches on both ends (%.2f Gbit/s)", float64(o.TransferMiB)*8*(1<<20)/took.Seconds()/1e9)
	if err := checkCapture(pcap); err != nil {
		return err
	}
	ok("underlay carried only WireGuard UDP, and the plaintext marker never appeared")

	step("wg show (Debian's wireguard-tools, through the UAPI socket)")
	out, err := lab.Nodes[0].Run(ctx, "wg", "show", devs[0].Name())
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Fprintln(w, "    "+l)
	}
	if !strings.Contains(out, "latest handshake") || !strings.Contains(out, "transfer:") {
		return errors.New("wg show shows no handshake or transfer")
	}

	if bench.HaveIperf3() {
		step("throughput (iperf3, 1 stream, 3 s)")
		th, err := bench.Iperf3(ctx, path.A.Node, path.B.Node, path.B.Addr, 1, 3*time.Second)
		if err != nil {
			return err
		}
		ok("weft %s: %.2f Gbit/s", o.Mode, th.Gbps)
	}
	if o.Keep {
		step("lab kept up; enter a node with: ip netns exec %s bash   (Ctrl-C to tear down)", lab.Nodes[0].NS)
		<-ctx.Done()
	}
	fmt.Fprintln(w, "==> all checks passed")
	return nil
}

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

func capture(ctx context.Context, n *netlab.Node) (string, func(), error) {
	dir, err := os.MkdirTemp("", "weft-demo-")
	if err != nil {
		return "", nil, err
	}
	file := filepath.Join(dir, "underlay.pcap")
	cmd := n.Command(ctx, "tcpdump", "-i", "eth0", "-s", "0", "-U", "-n", "-w", file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("tcpdump: %w", err)
	}
	// tcpdump creates the file once it listens.
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(file); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}
	return file, stop, nil
}

func checkCapture(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte(marker)) {
		return errors.New("plaintext marker found on the underlay")
	}
	out, err := exec.Command("tcpdump", "-r", file, "-n", "(ip or ip6) and not udp port 51820 and not ip multicast and not ip6 multicast").Output()
	if err != nil {
		return fmt.Errorf("read capture: %w", err)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		return fmt.Errorf("underlay carried packets that are not WireGuard:\n%s", s)
	}
	wgOut, _ := exec.Command("tcpdump", "-r", file, "-n", "udp port 51820").Output()
	if n := bytes.Count(wgOut, []byte("\n")); n < 100 {
		return fmt.Errorf("only %d WireGuard packets captured: the capture saw nothing", n)
	}
	return nil
}
