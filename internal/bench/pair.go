package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/netstack"
	"github.com/weftnet/weft/tunnel"
)

// Side is one end of a measured path.
type Side struct {
	Node *netlab.Node
	// Addr is where the other side reaches this one.
	Addr netip.Addr
	// Bind is where a server on this side listens, when not Addr (the
	// other side reaches it through a forward).
	Bind netip.Addr
	// Stack is set when the side's overlay address lives in a userspace
	// stack (netstack mode): kernel tools cannot use it, Go code can.
	Stack *netstack.Stack
}

// Path is two sides joined by something: the raw underlay, a weft device
// pair or a stock wireguard-go pair.
type Path struct {
	Name  string
	A, B  Side
	close func() error
	// cpu reports the CPU the path's tunnel has used so far; nil: unknown.
	cpu func() time.Duration
	// rtt measures the round trip in µs where ping cannot (B behind a
	// forward on A's loopback); nil: Ping.
	rtt func(ctx context.Context) (float64, error)
}

// Close takes the path's devices down.
func (p *Path) Close() error {
	if p.close == nil {
		return nil
	}
	return p.close()
}

// Underlay is the lab's raw underlay between its first two nodes.
func Underlay(lab *netlab.Lab) *Path {
	a, b := lab.Nodes[0], lab.Nodes[1]
	return &Path{Name: "underlay", A: Side{Node: a, Addr: a.Addr()}, B: Side{Node: b, Addr: b.Addr()}}
}

// OverlayAddr is the address node i (1-based) gets in the lab overlay of
// the given /24 number.
func OverlayAddr(net24, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64, byte(net24), byte(i)})
}

// WeftPair brings up a weft device of the given mode in the first two lab
// nodes and peers them. Devices are named wf<lab id>-<node>. In netstack mode
// only side A is a netstack device and B is a tun device, as for a sidecar
// talking to a host-mode node.
func WeftPair(ctx context.Context, lab *netlab.Lab, mode tunnel.Mode, mtu int, log *slog.Logger) (*Path, []tunnel.Device, error) {
	var devs []tunnel.Device
	closeAll := func() error {
		var errs []error
		for _, d := range devs {
			errs = append(errs, d.Close())
		}
		return errors.Join(errs...)
	}
	p := &Path{Name: "weft-" + string(mode), close: closeAll, cpu: selfCPU}
	for i, n := range lab.Nodes[:2] {
		key, err := tunnel.GeneratePrivateKey()
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		addr := OverlayAddr(0, i+1)
		m := mode
		if mode == tunnel.ModeNetstack && i == 1 {
			m = tunnel.ModeTUN
		}
		cfg := tunnel.Config{
			Name: "wf" + lab.ID + "-" + n.Name, Mode: m, PrivateKey: key,
			ListenPort: tunnel.DefaultListenPort, Address: netip.PrefixFrom(addr, 24), MTU: mtu, Logger: log,
		}
		var dev tunnel.Device
		if err := n.Do(func() error {
			var err error
			dev, err = tunnel.Open(ctx, cfg)
			return err
		}); err != nil {
			closeAll()
			return nil, nil, err
		}
		devs = append(devs, dev)
		s := Side{Node: n, Addr: addr}
		if nd, ok := dev.(*tunnel.NetstackDevice); ok {
			s.Stack = nd.Stack()
		}
		if i == 0 {
			p.A = s
		} else {
			p.B = s
		}
	}
	for i, d := range devs {
		o := 1 - i
		other := lab.Nodes[o]
		if err := d.SetPeers([]tunnel.Peer{{
			PublicKey:  devs[o].PublicKey(),
			Endpoint:   netip.AddrPortFrom(other.Addr(), tunnel.DefaultListenPort),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(OverlayAddr(0, o+1), 32)},
		}}); err != nil {
			closeAll()
			return nil, nil, err
		}
	}
	return p, devs, nil
}

// procs is a set of processes a path runs, one per node.
type procs struct {
	cmds []*exec.Cmd
}

func (ps *procs) start(c *exec.Cmd) error {
	if err := c.Start(); err != nil {
		return fmt.Errorf("start %s: %w", strings.Join(c.Args, " "), err)
	}
	ps.cmds = append(ps.cmds, c)
	return nil
}

func (ps *procs) stop() {
	for _, c := range ps.cmds {
		c.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
}

// cpu is the user+system CPU the processes have used so far.
func (ps *procs) cpu() time.Duration {
	var total time.Duration
	for _, c := range ps.cmds {
		total += procCPU(c.Process.Pid)
	}
	return total
}

// ProcessPair runs `weft tunnel up` (binary is weft itself) in each of the
// first two lab nodes, one process per node as on real nodes, peered with
// each other on overlay 100.64.2.0/24, port 51822.
func ProcessPair(ctx context.Context, lab *netlab.Lab, binary string, mode tunnel.Mode, mtu int) (*Path, error) {
	dir, err := os.MkdirTemp("", "weft-bench-")
	if err != nil {
		return nil, err
	}
	ps := &procs{}
	p := &Path{Name: "weft-" + string(mode), cpu: ps.cpu}
	p.close = func() error { ps.stop(); return os.RemoveAll(dir) }
	var keys []tunnel.PrivateKey
	for range 2 {
		k, err := tunnel.GeneratePrivateKey()
		if err != nil {
			p.close()
			return nil, err
		}
		keys = append(keys, k)
	}
	for i, n := range lab.Nodes[:2] {
		o := 1 - i
		keyFile := filepath.Join(dir, n.Name+".key")
		if err := tunnel.SavePrivateKey(keyFile, keys[i]); err != nil {
			p.close()
			return nil, err
		}
		addr := OverlayAddr(2, i+1)
		peer := fmt.Sprintf("%s,%s:51822,%s/32", keys[o].Public(), lab.Nodes[o].Addr(), OverlayAddr(2, o+1))
		c := n.Command(ctx, binary, "tunnel", "up", "--name", "wp"+lab.ID+"-"+n.Name, "--mode", string(mode),
			"--private-key-file", keyFile, "--address", addr.String()+"/24", "--listen-port", "51822",
			"--mtu", fmt.Sprint(mtu), "--peer", peer, "--log-level", "error")
		out, err := c.StdoutPipe()
		if err != nil {
			p.close()
			return nil, err
		}
		c.Stderr = os.Stderr
		if err := ps.start(c); err != nil {
			p.close()
			return nil, err
		}
		if err := waitReady(out, 10*time.Second); err != nil {
			p.close()
			return nil, fmt.Errorf("weft tunnel up in %s: %w", n.Name, err)
		}
		s := Side{Node: n, Addr: addr}
		if i == 0 {
			p.A = s
		} else {
			p.B = s
		}
	}
	return p, nil
}

// waitReady waits for the "ready" line of `weft tunnel up`.
func waitReady(r io.Reader, d time.Duration) error {
	got := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready ") {
				got <- nil
				io.Copy(io.Discard, r)
				return
			}
		}
		got <- errors.New("exited before it was ready")
	}()
	select {
	case err := <-got:
		return err
	case <-time.After(d):
		return fmt.Errorf("not ready within %v", d)
	}
}

// StockPair runs stock wireguard-go (the binary `go install
// golang.zx2c4.com/wireguard` builds) in the first two lab nodes, configured
// with Debian's `wg` and `ip`, on overlay 100.64.1.0/24 and port 51821.
func StockPair(ctx context.Context, lab *netlab.Lab, binary string, mtu int) (*Path, error) {
	dir, err := os.MkdirTemp("", "weft-bench-")
	if err != nil {
		return nil, err
	}
	ps := &procs{}
	var names []string
	p := &Path{Name: "wireguard-go", cpu: ps.cpu}
	p.close = func() error {
		ps.stop()
		for _, n := range names {
			os.Remove("/var/run/wireguard/" + n + ".sock")
		}
		return os.RemoveAll(dir)
	}
	var pubs []string
	for i, n := range lab.Nodes[:2] {
		name := "wg" + lab.ID + "-" + n.Name
		names = append(names, name)
		key, err := tunnel.GeneratePrivateKey()
		if err != nil {
			p.close()
			return nil, err
		}
		keyFile := filepath.Join(dir, name+".key")
		if err := tunnel.SavePrivateKey(keyFile, key); err != nil {
			p.close()
			return nil, err
		}
		pubs = append(pubs, key.Public().String())
		c := n.Command(ctx, binary, "-f", name)
		c.Env = append(os.Environ(), "LOG_LEVEL=error")
		if err := ps.start(c); err != nil {
			p.close()
			return nil, err
		}
		if err := waitFor("/var/run/wireguard/"+name+".sock", 10*time.Second); err != nil {
			p.close()
			return nil, err
		}
		addr := OverlayAddr(1, i+1)
		for _, args := range [][]string{
			{"wg", "set", name, "private-key", keyFile, "listen-port", "51821"},
			{"ip", "addr", "add", addr.String() + "/24", "dev", name},
			{"ip", "link", "set", name, "mtu", fmt.Sprint(mtu), "up"},
		} {
			if _, err := n.Run(ctx, args[0], args[1:]...); err != nil {
				p.close()
				return nil, err
			}
		}
		s := Side{Node: n, Addr: addr}
		if i == 0 {
			p.A = s
		} else {
			p.B = s
		}
	}
	for i, n := range lab.Nodes[:2] {
		o := 1 - i
		if _, err := n.Run(ctx, "wg", "set", names[i], "peer", pubs[o],
			"endpoint", lab.Nodes[o].Addr().String()+":51821",
			"allowed-ips", OverlayAddr(1, o+1).String()+"/32"); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

func waitFor(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not appear within %v", path, d)
}

// Ping measures the RTT between the sides in microseconds, pinging from B
// (always a kernel interface) to A: the median of ten pings, so one ping
// delayed by a busy machine does not move it.
func Ping(ctx context.Context, p *Path) (float64, error) {
	// The first packet of a tunnel waits for the handshake: not part of the RTT.
	p.B.Node.Run(ctx, "ping", "-c", "1", "-W", "2", p.A.Addr.String())
	out, err := p.B.Node.Run(ctx, "ping", "-c", "10", "-i", "0.05", "-W", "2", p.A.Addr.String())
	if err != nil {
		return 0, err
	}
	return medianPing(out)
}

// medianPing reads the "time=0.052 ms" of each reply.
func medianPing(out string) (float64, error) {
	var rtts []float64
	for _, l := range strings.Split(out, "\n") {
		i := strings.Index(l, "time=")
		if i < 0 {
			continue
		}
		f := strings.Fields(l[i+len("time="):])
		if len(f) < 2 || f[1] != "ms" {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("ping: %q: %w", l, err)
		}
		rtts = append(rtts, v*1000)
	}
	if len(rtts) == 0 {
		return 0, fmt.Errorf("ping: no replies in %q", out)
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2], nil
}

// PodPair runs a `weft agent` (binary is weft itself) in mode on each of the
// two lab nodes, adds one pod to each through the CNI plugin, and returns
// the path between the pods, once a ping crosses it. The path's CPU is the
// agents'.
func PodPair(ctx context.Context, lab *netlab.Lab, binary string, mode tunnel.Mode) (*Path, error) {
	if len(lab.Nodes) != 2 {
		return nil, fmt.Errorf("bench: pod pair on a lab of %d nodes: want 2", len(lab.Nodes))
	}
	dir, err := os.MkdirTemp("", "weft-bench-")
	if err != nil {
		return nil, err
	}
	mesh, err := lab.StartMesh(netlab.MeshConfig{Bin: binary, Dir: dir, Mode: string(mode),
		Extra: []string{"--gossip-profile", "local", "--log-level", "info"}})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &Path{Name: "weft-" + string(mode)}
	p.close = func() error { return errors.Join(mesh.Close(), os.RemoveAll(dir)) }
	p.cpu = func() time.Duration {
		var total time.Duration
		for _, a := range mesh.Agents {
			if pid := a.Pid(); pid > 0 {
				total += procCPU(pid)
			}
		}
		return total
	}
	fail := func(err error) (*Path, error) {
		p.close()
		return nil, fmt.Errorf("pod pair (%s): %w", mode, err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := mesh.WaitReady(wctx); err != nil {
		return fail(err)
	}
	var pods []*netlab.Pod
	for _, rt := range mesh.Runtimes {
		pod, err := rt.AddPod(wctx, "p1")
		if err != nil {
			return fail(err)
		}
		pods = append(pods, pod)
	}
	p.A = Side{Node: &pods[0].Node, Addr: pods[0].Addr()}
	p.B = Side{Node: &pods[1].Node, Addr: pods[1].Addr()}
	// The first packet waits for the agents to have each other as peers.
	for try := 0; ; try++ {
		_, err := p.B.Node.Run(wctx, "ping", "-c", "1", "-W", "1", p.A.Addr.String())
		if err == nil {
			break
		}
		if try == 60 || wctx.Err() != nil {
			return fail(fmt.Errorf("%s cannot reach %s: %w", pods[1].Name, pods[0].Name, err))
		}
		time.Sleep(250 * time.Millisecond)
	}
	return p, nil
}
