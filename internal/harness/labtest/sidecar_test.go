package labtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/internal/netlab"
)

// startSidecar runs `weft sidecar` in node as nobody (65534) with no
// /dev/net/tun, joining join's agent; stopped at cleanup.
func startSidecar(t *testing.T, lab *netlab.Lab, node *netlab.Node, key string, join *netlab.Node, env ...string) *netlab.Sidecar {
	t.Helper()
	// Under /tmp (not t.TempDir, whose parents only root may enter): the
	// sidecar's user must reach its own directory.
	dir, err := os.MkdirTemp("", "weft-sidecar-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := lab.StartSidecar(node, netlab.SidecarConfig{
		Bin: weftBin, Dir: dir, GossipKeyFile: key, Join: join, Env: env,
		Extra: []string{"--gossip-profile", "local"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("log of the sidecar in %s:\n%s", node.Name, s.LogTail())
		}
	})
	return s
}

// sidecarMember waits until p sees the sidecar named name alive, owning a
// single address of the sidecar range, and returns that address.
func sidecarMember(t *testing.T, p *proc, name string) netip.Addr {
	t.Helper()
	var addr netip.Addr
	eventually(t, 30*time.Second, p.name+" sees sidecar "+name, func() error {
		st, err := p.Status()
		if err != nil {
			return err
		}
		m, ok := member(st, name)
		if !ok || m.State != "alive" || m.Mode != plan.ModeSidecar {
			return fmt.Errorf("%s sees %s as %+v", p.name, name, m)
		}
		b, err := netip.ParsePrefix(m.Block)
		if err != nil || b.Bits() != 32 || !netip.MustParsePrefix(agent.DefaultSidecarRange).Contains(b.Addr()) {
			return fmt.Errorf("sidecar %s announces block %q, want a /32 of %s", name, m.Block, agent.DefaultSidecarRange)
		}
		if !m.OwnsBlock {
			return fmt.Errorf("%s does not own %s in %s's view", name, m.Block, p.name)
		}
		addr = b.Addr()
		return nil
	})
	return addr
}

// serveApp runs a line server in node on addr until the test ends: it
// reads everything the client sends (up to its half-close) and answers
// "<tag>:<bytes read>:<first line>".
func serveApp(t *testing.T, node *netlab.Node, addr, tag string) {
	t.Helper()
	ln, err := node.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				b, _ := io.ReadAll(c)
				first, _, _ := strings.Cut(string(b), "\n")
				fmt.Fprintf(c, "%s:%d:%s", tag, len(b), first)
			}()
		}
	}()
}

// ask sends msg on c, half-closes, and returns the whole answer.
func ask(c net.Conn, msg string) (string, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return "", err
		}
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func dialAsk(ctx context.Context, from *netlab.Node, to, msg string) (string, error) {
	c, err := from.DialContext(ctx, "tcp", to)
	if err != nil {
		return "", err
	}
	return ask(c, msg)
}

// Issue 7, test 2: `weft sidecar` started as an unprivileged uid, in a
// mount namespace with no /dev/net/tun, joins a lab mesh of host-mode
// agents and serves an app: the host node reaches the app on the sidecar's
// overlay address. SIGTERM makes it leave: exit 0, address freed at once.
func TestSidecarUnprivileged(t *testing.T) {
	lab := newLab(t, 2)
	key := writeGossipKey(t)
	host := startAgent(t, lab, lab.Nodes[0], key, nil, "--gossip-profile", "local")
	host.ready(30 * time.Second)
	appNode := lab.Nodes[1]
	serveApp(t, appNode, "127.0.0.1:8080", "app")
	car := startSidecar(t, lab, appNode, key, lab.Nodes[0], "WEFT_EXPOSE=8080")

	// What the process is: uid 65534, no capability, no TUN in sight.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", car.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`Uid:\s+65534\s+65534\s+65534\s+65534`, `CapEff:\s+0+\n`, `CapPrm:\s+0+\n`, `NoNewPrivs|CapBnd`} {
		if !regexp.MustCompile(want).Match(status) {
			t.Errorf("sidecar process status does not match %q:\n%s", want, status)
		}
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/dev/net/tun", car.Pid())); !os.IsNotExist(err) {
		t.Errorf("/dev/net/tun in the sidecar's mount namespace: stat err %v, want not-exist", err)
	}

	addr := sidecarMember(t, host, appNode.Name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eventually(t, 20*time.Second, "host node reaches the app behind the sidecar", func() error {
		got, err := dialAsk(ctx, host.node, netip.AddrPortFrom(addr, 8080).String(), "hello\n")
		if err != nil {
			return err
		}
		if got != "app:6:hello" {
			return fmt.Errorf("answer %q", got)
		}
		return nil
	})
	// A port that is not exposed is refused, not forwarded.
	if _, err := dialAsk(ctx, host.node, netip.AddrPortFrom(addr, 8081).String(), "x"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("unexposed port 8081: %v, want connection refused", err)
	}
	code, body, err := car.Get(ctx, "/healthz")
	if err != nil || code != 200 {
		t.Errorf("/healthz: %d %q %v", code, body, err)
	}
	_, metrics, err := car.Get(ctx, "/metrics")
	if err != nil || !regexp.MustCompile(`(?m)^weft_peers 1$`).MatchString(metrics) {
		t.Errorf("/metrics: want weft_peers 1 (err %v)", err)
	}
	// The uid cannot write /var/run/wireguard: the device runs without
	// its UAPI socket, and says so.
	if !strings.Contains(car.LogTail(), "no UAPI socket") {
		t.Errorf("sidecar log does not mention the missing UAPI socket")
	}

	car.Stop(syscall.SIGTERM)
	if c := car.ExitCode(); c != 0 {
		t.Errorf("sidecar exit code after SIGTERM: %d", c)
	}
	eventually(t, 20*time.Second, "sidecar left, its address free", func() error {
		st, err := host.Status()
		if err != nil {
			return err
		}
		if m, ok := member(st, appNode.Name); ok && m.State != "left" {
			return fmt.Errorf("host sees the sidecar %s", m.State)
		}
		for _, m := range st.Members {
			if m.Block == netip.PrefixFrom(addr, 32).String() && m.OwnsBlock {
				return fmt.Errorf("%s still owns %s", m.Name, m.Block)
			}
		}
		return nil
	})
}

// Issue 7, test 3: a mixed mesh. A pod on a host-mode node reaches an app
// behind a sidecar (inbound forward), and that app reaches the pod through
// the SOCKS5 proxy (by address and by member name), the HTTP CONNECT proxy
// and a static forward, with half-closes carried end to end.
func TestMixedMeshSidecarAndHostPods(t *testing.T) {
	lab := newLab(t, 2)
	key := writeGossipKey(t)
	hostNode, appNode := lab.Nodes[0], lab.Nodes[1]
	host := startAgent(t, lab, hostNode, key, nil, "--gossip-profile", "local")
	host.ready(30 * time.Second)

	pluginDir := t.TempDir()
	if err := os.Symlink(weftBin, filepath.Join(pluginDir, "weft")); err != nil {
		t.Fatal(err)
	}
	rt, err := lab.NewRuntime(hostNode, netlab.RuntimeConfig{PluginDir: pluginDir, AgentSocket: host.Socket(), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod, err := rt.AddPod(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	podAddr := pod.Underlay.Addr()
	serveApp(t, &pod.Node, ":9000", "pod")
	serveApp(t, hostNode, ":9001", "node") // on the host's node address too
	serveApp(t, appNode, "127.0.0.1:8080", "app")

	car := startSidecar(t, lab, appNode, key, hostNode,
		"WEFT_EXPOSE=8080",
		"WEFT_FORWARD=15432="+netip.AddrPortFrom(podAddr, 9000).String(),
		"WEFT_SOCKS_ADDR=127.0.0.1:1080", "WEFT_HTTP_PROXY_ADDR=127.0.0.1:3128")
	carAddr := sidecarMember(t, host, appNode.Name)

	// Inbound: pod -> sidecar address:8080 -> 127.0.0.1:8080 in the app's pod.
	eventually(t, 20*time.Second, "pod reaches the app behind the sidecar", func() error {
		got, err := dialAsk(ctx, &pod.Node, netip.AddrPortFrom(carAddr, 8080).String(), "in\nbound")
		if err == nil && got != "app:8:in" {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})

	// Outbound through the SOCKS5 proxy, by address and by member name.
	for _, tc := range []struct{ to, want string }{
		{netip.AddrPortFrom(podAddr, 9000).String(), "pod:10:via socks"},
		{hostNode.Name + ".weft:9001", "node:10:via socks"},
	} {
		eventually(t, 20*time.Second, "app reaches "+tc.to+" through SOCKS5", func() error {
			c, err := socks5Dial(ctx, appNode, "127.0.0.1:1080", tc.to)
			if err != nil {
				return err
			}
			got, err := ask(c, "via socks\n")
			if err == nil && got != tc.want {
				err = fmt.Errorf("answer %q, want %q", got, tc.want)
			}
			return err
		})
	}

	// Outbound through the HTTP CONNECT proxy.
	eventually(t, 20*time.Second, "app reaches the pod through HTTP CONNECT", func() error {
		c, err := appNode.DialContext(ctx, "tcp", "127.0.0.1:3128")
		if err != nil {
			return err
		}
		target := netip.AddrPortFrom(podAddr, 9000).String()
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return err
		}
		if !strings.Contains(line, " 200") {
			c.Close()
			return fmt.Errorf("CONNECT answered %q", line)
		}
		for line != "\r\n" && err == nil {
			line, err = br.ReadString('\n')
		}
		got, err := ask(bufferedConn{c, br}, "via connect\n")
		if err == nil && got != "pod:12:via connect" {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})

	// Outbound through the static forward 127.0.0.1:15432 -> pod:9000.
	eventually(t, 20*time.Second, "app reaches the pod through the static forward", func() error {
		got, err := dialAsk(ctx, appNode, "127.0.0.1:15432", "via forward\n")
		if err == nil && got != "pod:12:via forward" {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})
	if !car.Running() {
		t.Fatalf("sidecar exited:\n%s", car.LogTail())
	}
}

// socks5Dial connects through the SOCKS5 proxy at proxyAddr in node to
// target (host:port, the host sent as a domain name: the proxy resolves
// it), as an app would, and returns the raw connection (so that the test
// can half-close it; golang.org/x/net/proxy's wrapper cannot).
func socks5Dial(ctx context.Context, node *netlab.Node, proxyAddr, target string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(portStr)
	c, err := node.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...)
	req = append(req, byte(port>>8), byte(port))
	// Greeting (no auth) and CONNECT in one write; the server reads them
	// in turn.
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	var reply [12]byte // method choice, then a reply with an IPv4 bound address
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("socks5 reply: %w", err)
	}
	if reply[0] != 5 || reply[1] != 0 || reply[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("socks5: method %d, reply code %d", reply[1], reply[3])
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// bufferedConn reads through the reader that parsed the CONNECT answer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c bufferedConn) CloseWrite() error {
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite()
}
