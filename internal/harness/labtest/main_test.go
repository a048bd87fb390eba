package labtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/internal/harness/gobuild"
	"github.com/weftnet/weft/internal/netlab"
)

// weftBin is the weft binary every agent runs, built once in TestMain.
var weftBin string

// labIDs are the labs this process built, for the leak check in TestMain.
var labIDs struct {
	sync.Mutex
	ids []string
}

func TestMain(m *testing.M) {
	os.Exit(func() int {
		flag.Parse()
		if os.Geteuid() == 0 && !testing.Short() {
			bin, cleanup, err := gobuild.WeftTemp("weft-labtest-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer cleanup()
			weftBin = bin
		}
		code := m.Run()
		if leaked := leftNamespaces(); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "labtest: namespaces left behind: %v\n", leaked)
			return 1
		}
		return code
	}())
}

// leftNamespaces lists the namespaces of this process's labs that still
// exist.
func leftNamespaces() []string {
	ents, _ := os.ReadDir(netlab.NetnsDir)
	labIDs.Lock()
	defer labIDs.Unlock()
	var left []string
	for _, e := range ents {
		for _, id := range labIDs.ids {
			if strings.HasPrefix(e.Name(), netlab.NamePrefix+id+"-") {
				left = append(left, e.Name())
			}
		}
	}
	return left
}

// newLab builds a lab of n nodes, removed at cleanup.
func newLab(t *testing.T, n int) *netlab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs weft agents in network namespaces")
	}
	if testing.Short() {
		t.Skip("failure test with real agent processes; runs without -short")
	}
	lab, err := netlab.New(context.Background(), netlab.Config{Nodes: n})
	if err != nil {
		t.Fatal(err)
	}
	labIDs.Lock()
	labIDs.ids = append(labIDs.ids, lab.ID)
	labIDs.Unlock()
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return lab
}

func writeGossipKey(t *testing.T) string {
	t.Helper()
	path, err := netlab.WriteGossipKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// proc is one `weft agent` process, stopped at cleanup (its log tail
// printed if the test failed).
type proc struct {
	*netlab.Agent
	t    *testing.T
	node *netlab.Node
	// name is the member name: the node's, unless --node-name says otherwise.
	name string
}

// startAgent runs `weft agent` in node, joining join (nil: none).
func startAgent(t *testing.T, lab *netlab.Lab, node *netlab.Node, key string, join *netlab.Node, extra ...string) *proc {
	t.Helper()
	a, err := lab.StartAgent(node, netlab.AgentConfig{
		Bin: weftBin, Dir: filepath.Join(t.TempDir(), node.Name),
		GossipKeyFile: key, Join: join, Extra: extra,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{Agent: a, t: t, node: node, name: node.Name}
	if i := slices.Index(extra, "--node-name"); i >= 0 && i+1 < len(extra) {
		p.name = extra[i+1]
	}
	t.Cleanup(func() {
		p.Stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("log of %s (%s):\n%s", p.name, node.Name, p.LogTail())
			// The whole log, for a post mortem, where the runner asks.
			if dir := os.Getenv("WEFT_LABTEST_LOGS"); dir != "" {
				if b, err := os.ReadFile(filepath.Join(p.Dir, "agent.log")); err == nil {
					os.WriteFile(filepath.Join(dir, t.Name()+"-"+p.name+".log"), b, 0o600)
				}
			}
		}
	})
	return p
}

// eventually polls cond every 200 ms until it returns nil, and fails the
// test with cond's last error when timeout passes first.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ready waits until p serves its API with a lease and returns its report.
func (p *proc) ready(timeout time.Duration) api.Report {
	p.t.Helper()
	var st api.Report
	eventually(p.t, timeout, p.name+" ready", func() error {
		var err error
		if st, err = p.Status(); err != nil {
			return err
		}
		if !st.Ready || st.Self.Block == "" || st.Self.Address == "" {
			return fmt.Errorf("%s not ready (block %q)", p.name, st.Self.Block)
		}
		return nil
	})
	return st
}

// address is p's current overlay (node) address.
func (p *proc) address() (netip.Addr, error) {
	st, err := p.Status()
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(st.Self.Address)
}

// metric reads one unlabelled series from p's metrics.
func (p *proc) metric(name string) (float64, error) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ([0-9.e+-]+)$`).FindStringSubmatch(p.Metrics())
	if m == nil {
		return 0, fmt.Errorf("%s: no %s in its metrics", p.name, name)
	}
	return strconv.ParseFloat(m[1], 64)
}

// member finds name in a report.
func member(st api.Report, name string) (api.MemberReport, bool) {
	for _, m := range st.Members {
		if m.Name == name {
			return m, true
		}
	}
	return api.MemberReport{}, false
}

// pingOverlay sends a few pings from a node to an overlay address; it is
// also how the tests make WireGuard handshake (peers handshake on traffic).
func pingOverlay(from *netlab.Node, to netip.Addr) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := from.Run(ctx, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "2", to.String())
	if err != nil {
		return err
	}
	if !strings.Contains(out, " 2 received") {
		return fmt.Errorf("ping %s from %s: %s", to, from.Name, out)
	}
	return nil
}

// meshed reports nil once every agent of ps sees every other one alive,
// owning a block, as a WireGuard peer with a handshake. It pings along the
// way, so handshakes happen.
func meshed(ps ...*proc) error {
	for _, p := range ps {
		st, err := p.Status()
		if err != nil {
			return err
		}
		if !st.Ready {
			return fmt.Errorf("%s not ready", p.name)
		}
		for _, q := range ps {
			m, ok := member(st, q.name)
			switch {
			case !ok:
				return fmt.Errorf("%s does not see %s", p.name, q.name)
			case m.State != "alive":
				return fmt.Errorf("%s sees %s %s", p.name, q.name, m.State)
			case m.Block == "" || !m.OwnsBlock:
				return fmt.Errorf("%s: %s owns no block (%q)", p.name, q.name, m.Block)
			case q != p && (m.Peer == nil || m.Peer.LastHandshake.IsZero()):
				if a, err := q.address(); err == nil {
					pingOverlay(p.node, a)
				}
				return fmt.Errorf("%s: no handshake with %s yet", p.name, q.name)
			}
		}
	}
	return nil
}

// stream is a steady TCP stream from one node to another over the overlay
// (node addresses), from sockets the test owns.
type stream struct {
	received atomic.Int64
	cancel   context.CancelFunc
	sendErr  chan error
	recvErr  chan error
	conn     net.Conn
	l        net.Listener
}

// startStream connects from a to b and keeps writing until stop.
func startStream(t *testing.T, a, b *proc) *stream {
	t.Helper()
	src, err := a.address()
	if err != nil {
		t.Fatal(err)
	}
	dst, err := b.address()
	if err != nil {
		t.Fatal(err)
	}
	s := &stream{sendErr: make(chan error, 1), recvErr: make(chan error, 1)}
	if s.l, err = b.node.Listen("tcp", netip.AddrPortFrom(dst, 0).String()); err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := s.l.Accept()
		if err != nil {
			s.recvErr <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			s.received.Add(int64(n))
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				s.recvErr <- err
				return
			}
		}
	}()
	eventually(t, 30*time.Second, "stream "+a.name+" -> "+b.name+" connects", func() error {
		return a.node.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 3 * time.Second}
			var err error
			s.conn, err = d.Dial("tcp", s.l.Addr().String())
			return err
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		buf := make([]byte, 16<<10)
		for ctx.Err() == nil {
			// A write blocked this long means the stream is dead, not slow.
			s.conn.SetWriteDeadline(time.Now().Add(45 * time.Second))
			if _, err := s.conn.Write(buf); err != nil {
				s.sendErr <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
		s.sendErr <- nil
	}()
	t.Cleanup(func() { s.stop() })
	return s
}

// flows waits until at least n more bytes have arrived.
func (s *stream) flows(t *testing.T, n int64, timeout time.Duration, what string) {
	t.Helper()
	mark := s.received.Load()
	eventually(t, timeout, what, func() error {
		if got := s.received.Load() - mark; got < n {
			return fmt.Errorf("%d of %d bytes", got, n)
		}
		return nil
	})
}

// stop ends the stream; it reports an error if either end saw one (a
// reset, a write that timed out) before the stop.
func (s *stream) stop() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	s.cancel = nil
	sendErr := <-s.sendErr
	s.conn.Close()
	var recvErr error
	select {
	case recvErr = <-s.recvErr:
	case <-time.After(10 * time.Second):
		recvErr = errors.New("receiver saw no end of the stream within 10 s")
	}
	s.l.Close()
	if sendErr != nil {
		return fmt.Errorf("sender: %w", sendErr)
	}
	if recvErr != nil {
		return fmt.Errorf("receiver: %w", recvErr)
	}
	return nil
}
