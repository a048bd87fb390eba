package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// meshGoal is what "formed" means: every agent sees `members` alive members
// and `leases` members owning their block; across all agents at least
// `handshakes` peers have completed a WireGuard handshake.
type meshGoal struct {
	members, leases, handshakes int
}

// meshState is the mesh as the agents report it right now.
type meshState struct {
	// members and leases are the minimum over the agents.
	members, leases int
	// peers and handshakes are summed over the agents.
	peers, handshakes int
	// down lists agents that did not answer.
	down int
}

func (s meshState) reached(g meshGoal, nodes int) bool {
	return s.down == 0 && s.members >= g.members && s.leases >= g.leases &&
		s.peers >= nodes*(nodes-1) && s.handshakes >= g.handshakes
}

func readMesh(m *netlab.Mesh) meshState {
	s := meshState{members: 1 << 30, leases: 1 << 30}
	for _, a := range m.Agents {
		st, err := a.Status()
		if err != nil {
			s.down++
			s.members, s.leases = 0, 0
			continue
		}
		alive, owned := 0, 0
		for _, mem := range st.Members {
			if mem.State != "alive" {
				continue
			}
			alive++
			if mem.OwnsBlock {
				owned++
			}
			if mem.Peer != nil {
				s.peers++
				if !mem.Peer.LastHandshake.IsZero() {
					s.handshakes++
				}
			}
		}
		s.members, s.leases = min(s.members, alive), min(s.leases, owned)
	}
	return s
}

// progress draws the mesh forming: one line redrawn in place on a
// terminal, a line per change otherwise.
type progress struct {
	w        io.Writer
	terminal bool
	took     time.Duration
}

// wait polls the agents until the goal is reached or timeout passes,
// calling poke (if set) on every round.
func (p *progress) wait(ctx context.Context, m *netlab.Mesh, g meshGoal, timeout time.Duration, poke func()) error {
	nodes := len(m.Agents)
	start := time.Now()
	deadline := start.Add(timeout)
	last := ""
	for round := 0; ; round++ {
		if poke != nil {
			poke()
		}
		s := readMesh(m)
		line := fmt.Sprintf("mesh: members alive %d/%d  leases %d/%d  peers %d/%d  handshakes %d/%d",
			max(s.members, 0), nodes, max(s.leases, 0), nodes, s.peers, nodes*(nodes-1), s.handshakes, nodes*(nodes-1))
		if s.down > 0 {
			line += fmt.Sprintf("  (%d agent(s) not answering)", s.down)
		}
		done := s.reached(g, nodes)
		switch {
		case p.terminal:
			fmt.Fprintf(p.w, "\r    %s  %4.1fs\033[K", line, time.Since(start).Seconds())
			if done {
				fmt.Fprintln(p.w)
			}
		case line != last:
			fmt.Fprintf(p.w, "    %s  (%.1fs)\n", line, time.Since(start).Seconds())
		}
		last = line
		if done {
			p.took = time.Since(start)
			return nil
		}
		if time.Now().After(deadline) {
			if p.terminal {
				fmt.Fprintln(p.w)
			}
			return fmt.Errorf("mesh did not form within %v: %s", timeout, line)
		}
		select {
		case <-ctx.Done():
			if p.terminal {
				fmt.Fprintln(p.w)
			}
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// poker returns a function that sends one UDP datagram from each node's
// first pod to every other node's first pod (to the discard port): the
// first packet to a peer is what starts a WireGuard handshake.
func (d *demo) poker() (poke func(), stop func()) {
	var conns []net.PacketConn
	var targets []netip.AddrPort
	for _, ps := range d.pods {
		p := ps[0]
		targets = append(targets, netip.AddrPortFrom(p.Addr(), 9))
		var c net.PacketConn
		if err := p.Do(func() error {
			var err error
			c, err = net.ListenPacket("udp4", ":0")
			return err
		}); err == nil {
			conns = append(conns, c)
		} else {
			conns = append(conns, nil)
		}
	}
	var once sync.Once
	poke = func() {
		for i, c := range conns {
			if c == nil {
				continue
			}
			for j, t := range targets {
				if i != j {
					c.WriteTo([]byte("poke"), net.UDPAddrFromAddrPort(t))
				}
			}
		}
	}
	stop = func() {
		once.Do(func() {
			for _, c := range conns {
				if c != nil {
					c.Close()
				}
			}
		})
	}
	return poke, stop
}
