package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// PathSidecar is the path from an app behind a sidecar to a host-mode pod.
const PathSidecar = "sidecar-to-pod"

// iperfPort is iperf3's default port, forwarded by the sidecar; echoPort
// is forwarded to an echo server in the pod, for the round-trip time.
const (
	iperfPort = 5201
	echoPort  = 5202
)

// SidecarPair measures what a restricted-cluster app gets: a `weft agent`
// in tun mode with one pod (added through the CNI plugin) on the first
// node, and an unprivileged `weft sidecar` on the second, whose static
// forward 127.0.0.1:5201 leads to the pod's port 5201. The client (A) is
// the app on the sidecar's node and reaches the server (B, the pod)
// through the forward at 127.0.0.1, so its traffic crosses the forward,
// the userspace TCP/IP stack and WireGuard, like an app's through the
// proxy would. The path's CPU is the agent's and the sidecar's.
func SidecarPair(ctx context.Context, lab *netlab.Lab, binary string) (*Path, error) {
	if len(lab.Nodes) != 2 {
		return nil, fmt.Errorf("bench: sidecar pair on a lab of %d nodes: want 2", len(lab.Nodes))
	}
	dir, err := os.MkdirTemp("", "weft-bench-sidecar-")
	if err != nil {
		return nil, err
	}
	var closers []func() error
	p := &Path{Name: "weft-sidecar"}
	p.close = func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(append(errs, os.RemoveAll(dir))...)
	}
	fail := func(err error) (*Path, error) {
		p.close()
		return nil, fmt.Errorf("sidecar pair: %w", err)
	}
	host, car := lab.Nodes[0], lab.Nodes[1]
	keyFile, err := netlab.WriteGossipKey(dir)
	if err != nil {
		return fail(err)
	}
	a, err := lab.StartAgent(host, netlab.AgentConfig{Bin: binary, Dir: filepath.Join(dir, "agent"), GossipKeyFile: keyFile,
		Extra: []string{"--mode", "tun", "--gossip-profile", "local", "--log-level", "info"}})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() error { a.Stop(syscall.SIGTERM); return nil })
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := netlab.WaitLease(wctx, a.Socket()); err != nil {
		return fail(fmt.Errorf("%w\n%s", err, a.LogTail()))
	}
	pluginDir := filepath.Join(dir, "cni-bin")
	if err := os.MkdirAll(pluginDir, 0o700); err != nil {
		return fail(err)
	}
	if err := os.Symlink(binary, filepath.Join(pluginDir, "weft")); err != nil {
		return fail(err)
	}
	rt, err := lab.NewRuntime(host, netlab.RuntimeConfig{PluginDir: pluginDir, AgentSocket: a.Socket(), Dir: filepath.Join(dir, "cni")})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, rt.Close)
	pod, err := rt.AddPod(wctx, "p1")
	if err != nil {
		return fail(err)
	}
	// The sidecar's user must reach its directory: not under dir (0700).
	carDir, err := os.MkdirTemp("", "weft-bench-car-")
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() error { return os.RemoveAll(carDir) })
	// Nor may the binary sit where only root can reach: run a copy.
	carBin := filepath.Join(carDir, "weft")
	if err := copyFile(binary, carBin, 0o755); err != nil {
		return fail(err)
	}
	forward := fmt.Sprintf("WEFT_FORWARD=%d=%s,%d=%s", iperfPort, netip.AddrPortFrom(pod.Addr(), iperfPort),
		echoPort, netip.AddrPortFrom(pod.Addr(), echoPort))
	sc, err := lab.StartSidecar(car, netlab.SidecarConfig{Bin: carBin, Dir: carDir, GossipKeyFile: keyFile, Join: host,
		Env: []string{forward}, Extra: []string{"--gossip-profile", "local", "--log-level", "info"}})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() error { sc.Stop(syscall.SIGTERM); return nil })
	p.cpu = func() time.Duration {
		var total time.Duration
		for _, pid := range []int{a.Pid(), sc.Pid()} {
			if pid > 0 {
				total += procCPU(pid)
			}
		}
		return total
	}
	echo, err := pod.Listen("tcp", fmt.Sprintf(":%d", echoPort))
	if err != nil {
		return fail(err)
	}
	closers = append(closers, echo.Close)
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	p.rtt = func(ctx context.Context) (float64, error) {
		return echoRTT(ctx, car, fmt.Sprintf("127.0.0.1:%d", echoPort))
	}
	p.A = Side{Node: car, Addr: car.Addr()}
	p.B = Side{Node: &pod.Node, Addr: netip.MustParseAddr("127.0.0.1"), Bind: pod.Addr()} // through the forward
	// Ready once a connection crosses the forward to a listener in the pod.
	ln, err := pod.Listen("tcp", fmt.Sprintf(":%d", iperfPort))
	if err != nil {
		return fail(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	for try := 0; ; try++ {
		c, err := car.DialContext(wctx, "tcp", fmt.Sprintf("127.0.0.1:%d", iperfPort))
		if err == nil {
			buf := make([]byte, 2)
			c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = c.Read(buf)
			c.Close()
			if err == nil {
				break
			}
		}
		if try == 120 || wctx.Err() != nil {
			return fail(fmt.Errorf("the app behind the sidecar cannot reach the pod: %v\n%s", err, sc.LogTail()))
		}
		time.Sleep(250 * time.Millisecond)
	}
	return p, nil
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// echoRTT is the median of ten one-byte round trips to an echo server at
// addr, from node, on one connection: through a forward, the TCP round
// trip across the mesh (ping cannot reach behind it).
func echoRTT(ctx context.Context, node *netlab.Node, addr string) (float64, error) {
	c, err := node.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var rtts []float64
	b := []byte{0}
	for range 11 {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, fmt.Errorf("echo through %s: %w", addr, err)
		}
		rtts = append(rtts, float64(time.Since(start).Microseconds()))
	}
	rtts = rtts[1:] // the first pays for the forward's dial
	slices.Sort(rtts)
	return rtts[len(rtts)/2], nil
}
