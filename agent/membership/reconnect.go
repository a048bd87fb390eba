package membership

import (
	"cmp"
	"context"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/weftnet/weft/agent/plan"
)

// reconnectLoop runs reconnectFailed every 10 s, apart from the event loop: a
// join to a member that is really gone blocks for the TCP timeout. It is
// slow on purpose: each try is a full-state push-pull.
func (m *Membership) reconnectLoop(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.reconnectFailed()
		}
	}
}

// reconnectFailed contacts a few members we see as failed. A member can be
// declared dead by a single node under load and stay dead there:
// memberlist lets that dead state beat every alive message of the same
// incarnation, and only the member itself can refute it, once it hears of
// it. Serf's own reconnect tries a failed member with a probability of
// failed/alive per interval (minutes in a big mesh); a push-pull with the
// member now makes it refute within a round trip, or fails fast if it is
// really gone.
//
// Each round tries the two members that failed most recently (a false
// verdict is a recent one) and one more in turn, at once: with twenty real
// failures in the view, one at a time in turn took minutes to reach a
// member that had only flapped.
//
// A verdict spreads to every view, so every agent would try the same
// member at once: only about reconnectFanout agents of the whole mesh take
// part in a round (takesPart).
func (m *Membership) reconnectFailed() {
	type failedMember struct {
		addr  string
		since time.Time
	}
	var failed []failedMember
	now := m.now()
	m.mu.Lock()
	seen := maps.Clone(m.seen)
	m.mu.Unlock()
	alive := 0
	for _, sm := range m.serf.Members() {
		if sm.Status == serf.StatusAlive {
			alive++
		}
		if sm.Status == serf.StatusFailed {
			since := now
			if s, ok := seen[sm.Name]; ok && s.status == plan.StatusFailed {
				since = s.since
			}
			failed = append(failed, failedMember{net.JoinHostPort(sm.Addr.String(), strconv.Itoa(int(sm.Port))), since})
		}
	}
	if len(failed) == 0 || !takesPart(alive, rand.N) {
		return
	}
	slices.SortFunc(failed, func(a, b failedMember) int { return cmp.Or(b.since.Compare(a.since), strings.Compare(a.addr, b.addr)) })
	try := map[string]bool{}
	for _, f := range failed[:min(2, len(failed))] {
		try[f.addr] = true
	}
	m.mu.Lock()
	m.rr++
	try[failed[m.rr%len(failed)].addr] = true
	m.mu.Unlock()
	var wg sync.WaitGroup
	for addr := range try {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.pushPull(addr, "reconnected to a member we saw failed")
		}()
	}
	wg.Wait()
}

// reconnectFanout is how many agents of a mesh, on average, try failed
// members in one reconnect round. With every agent trying, a false verdict
// in a 1000-member simulation drew 1000 full-state push-pulls to one member
// every 10 s: the storm kept the machine overloaded and made more false
// verdicts. A member that is really gone costs each try a refused dial.
const reconnectFanout = 8

// takesPart says whether this agent, seeing alive members alive (itself
// included), takes part in a reconnect round: always in a mesh of at most
// reconnectFanout, else with probability reconnectFanout/alive. An agent cut
// off from the rest sees itself alone and always tries. randN is
// rand.N[int], a parameter for tests.
func takesPart(alive int, randN func(int) int) bool {
	return alive <= reconnectFanout || randN(alive) < reconnectFanout
}

// pushPull exchanges full state with the member at addr: memberlist's
// Join is a push-pull over TCP bounded by its TCP timeout, and Serf merges
// the state it brings (members that left, Lamport times). Not Serf's Join:
// that also broadcasts a join intent, and intents take the room of a
// gossip packet before queries do; one per reconnect or resync starved
// the failed-member notices (failed.go) of a 200-member churn for minutes.
func (m *Membership) pushPull(addr, why string) bool {
	if _, err := m.serf.Memberlist().Join([]string{addr}); err != nil {
		return false
	}
	m.log.Debug(why, "addr", addr)
	return true
}

// Resync exchanges full state with one alive member picked at random: the
// agent's repair of a view it has reason to doubt (a member it thinks
// failed still holds a block that a live member announces: the others may
// have seen that member leave).
func (m *Membership) Resync(except string) {
	var alive []string
	self := m.serf.LocalMember().Name
	for _, sm := range m.serf.Members() {
		if sm.Status == serf.StatusAlive && sm.Name != self && sm.Name != except {
			alive = append(alive, net.JoinHostPort(sm.Addr.String(), strconv.Itoa(int(sm.Port))))
		}
	}
	if len(alive) == 0 {
		return
	}
	addr := alive[rand.N(len(alive))]
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.pushPull(addr, "resynced with a member")
	}()
}
