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
	s := &sidecarSetup{lab: lab, binary: binary, dir: dir, host: lab.Nodes[0], car: lab.Nodes[1]}
	p := &Path{Name: "weft-sidecar", close: s.close}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := s.start(wctx, p); err != nil {
		s.close()
		return nil, fmt.Errorf("sidecar pair: %w", err)
	}
	return p, nil
}

// sidecarSetup is SidecarPair's work in progress: what it started, to be
// stopped in reverse order by close.
type sidecarSetup struct {
	lab       *netlab.Lab
	binary    string
	dir       string
	host, car *netlab.Node
	keyFile   string
	closers   []func() error
}

func (s *sidecarSetup) close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(append(errs, os.RemoveAll(s.dir))...)
}

// start brings up the agent and its pod, then the sidecar, and fills in
// p once the app's side reaches the pod through the forward.
func (s *sidecarSetup) start(ctx context.Context, p *Path) error {
	var err error
	if s.keyFile, err = netlab.WriteGossipKey(s.dir); err != nil {
		return err
	}
	a, pod, err := s.startPod(ctx)
	if err != nil {
		return err
	}
	sc, err := s.startSidecar(pod)
	if err != nil {
		return err
	}
	p.cpu = func() time.Duration {
		var total time.Duration
		for _, pid := range []int{a.Pid(), sc.Pid()} {
			if pid > 0 {
				total += procCPU(pid)
			}
		}
		return total
	}
	if err := s.serveEcho(pod); err != nil {
		return err
	}
	car := s.car
	p.rtt = func(ctx context.Context) (float64, error) {
		return echoRTT(ctx, car, fmt.Sprintf("127.0.0.1:%d", echoPort))
	}
	p.A = Side{Node: car, Addr: car.Addr()}
	p.B = Side{Node: &pod.Node, Addr: netip.MustParseAddr("127.0.0.1"), Bind: pod.Addr()} // through the forward
	return s.waitForward(ctx, pod, sc)
}

// startPod starts the tun-mode agent on the host node and adds a pod
// through the CNI plugin once the agent has its lease.
func (s *sidecarSetup) startPod(ctx context.Context) (*netlab.Agent, *netlab.Pod, error) {
	a, err := s.lab.StartAgent(s.host, netlab.AgentConfig{Bin: s.binary, Dir: filepath.Join(s.dir, "agent"), GossipKeyFile: s.keyFile,
		Extra: []string{"--mode", "tun", "--gossip-profile", "local", "--log-level", "info"}})
	if err != nil {
		return nil, nil, err
	}
	s.closers = append(s.closers, func() error { a.Stop(syscall.SIGTERM); return nil })
	if _, err := netlab.WaitLease(ctx, a.Socket()); err != nil {
		return nil, nil, fmt.Errorf("%w\n%s", err, a.LogTail())
	}
	pluginDir := filepath.Join(s.dir, "cni-bin")
	if err := os.MkdirAll(pluginDir, 0o700); err != nil {
		return nil, nil, err
	}
	if err := os.Symlink(s.binary, filepath.Join(pluginDir, "weft")); err != nil {
		return nil, nil, err
	}
	rt, err := s.lab.NewRuntime(s.host, netlab.RuntimeConfig{PluginDir: pluginDir, AgentSocket: a.Socket(), Dir: filepath.Join(s.dir, "cni")})
	if err != nil {
		return nil, nil, err
	}
	s.closers = append(s.closers, rt.Close)
	pod, err := rt.AddPod(ctx, "p1")
	if err != nil {
		return nil, nil, err
	}
	return a, pod, nil
}

// startSidecar starts the unprivileged sidecar on the other node,
// forwarding 127.0.0.1's iperf3 and echo ports to the pod.
func (s *sidecarSetup) startSidecar(pod *netlab.Pod) (*netlab.Sidecar, error) {
	// The sidecar's user must reach its directory: not under dir (0700).
	carDir, err := os.MkdirTemp("", "weft-bench-car-")
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() error { return os.RemoveAll(carDir) })
	// Nor may the binary sit where only root can reach: run a copy.
	carBin := filepath.Join(carDir, "weft")
	if err := copyFile(s.binary, carBin, 0o755); err != nil {
		return nil, err
	}
	forward := fmt.Sprintf("WEFT_FORWARD=%d=%s,%d=%s", iperfPort, netip.AddrPortFrom(pod.Addr(), iperfPort),
		echoPort, netip.AddrPortFrom(pod.Addr(), echoPort))
	sc, err := s.lab.StartSidecar(s.car, netlab.SidecarConfig{Bin: carBin, Dir: carDir, GossipKeyFile: s.keyFile, Join: s.host,
		Env: []string{forward}, Extra: []string{"--gossip-profile", "local", "--log-level", "info"}})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() error { sc.Stop(syscall.SIGTERM); return nil })
	return sc, nil
}

// serveEcho runs an echo server on the pod's echoPort, for the
// round-trip time.
func (s *sidecarSetup) serveEcho(pod *netlab.Pod) error {
	echo, err := pod.Listen("tcp", fmt.Sprintf(":%d", echoPort))
	if err != nil {
		return err
	}
	s.closers = append(s.closers, echo.Close)
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return nil
}

// waitForward waits until a connection crosses the forward to a listener
// in the pod.
func (s *sidecarSetup) waitForward(ctx context.Context, pod *netlab.Pod, sc *netlab.Sidecar) error {
	ln, err := pod.Listen("tcp", fmt.Sprintf(":%d", iperfPort))
	if err != nil {
		return err
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
		c, err := s.car.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", iperfPort))
		if err == nil {
			buf := make([]byte, 2)
			c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = c.Read(buf)
			c.Close()
			if err == nil {
				return nil
			}
		}
		if try == 120 || ctx.Err() != nil {
			return fmt.Errorf("the app behind the sidecar cannot reach the pod: %v\n%s", err, sc.LogTail())
		}
		time.Sleep(250 * time.Millisecond)
	}
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
