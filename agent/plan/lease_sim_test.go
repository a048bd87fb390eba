package plan

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The lease simulation drives up to simNodes members through joins, leaves,
// crashes, rejoins, partitions and clock jumps, lets every alive member
// apply NextLease to what it sees until nobody changes, and checks the lease
// rules (the package comment) against an independent oracle.
//
// Gossip is modelled as: while the cluster is split, a member sees its own
// group as it is and the other group as it was at the split, with those
// then alive now failed since the split; outside a split every member sees
// every member as it is. (Real agents may disagree on when a member failed
// after a heal; that only shifts when its TTL runs out.)

const (
	simNodes     = 24
	simMaxRounds = 50
	simMaxOps    = 48 // longer runs find little more and make minimizing slow
)

// simPools are the pools a run can use; the small ones fill up, so
// ErrNoFreeBlock and the reuse of freed blocks get exercised.
func simPools() []LeaseConfig {
	return []LeaseConfig{
		{Range: netip.MustParsePrefix("100.64.0.0/20"), BlockBits: 24, TTL: 10 * time.Minute},  // 16 blocks
		{Range: netip.MustParsePrefix("100.127.0.0/27"), BlockBits: 32, TTL: 10 * time.Minute}, // 32 blocks
		{Range: netip.MustParsePrefix("100.64.0.0/16"), BlockBits: 24, TTL: 10 * time.Minute},  // 256 blocks
		{Range: netip.MustParsePrefix("fd00:64::/60"), BlockBits: 64, TTL: 10 * time.Minute},   // 16 blocks, IPv6
	}
}

type simNode struct {
	name   string
	joined bool // a member at some point, so in member lists
	status Status
	since  time.Time
	tags   Tags
	group  int // partition group while the cluster is split
}

func (n *simNode) member() Member {
	return Member{Name: n.name, Status: n.status, Since: n.since, Tags: n.tags}
}

type leaseSim struct {
	t       *testing.T
	c       LeaseConfig
	now     time.Time
	nodes   []*simNode // in name order
	split   bool
	splitAt time.Time
	// snapshot is every member as the cluster saw it when it split: what a
	// group keeps seeing of the other group's members.
	snapshot map[string]Member
	trace    []string
	stats    simStats
	rejoined *simNode    // the node the last operation brought back
	views    [2][]Member // groupView's cache, by group
}

// simStats counts what a run exercised, so a test can show the seed
// corpus reaches every rule.
type simStats struct {
	moved         int // holders that moved after losing a conflict
	noFreeBlock   int // NextLease answers of ErrNoFreeBlock
	reusedLeft    int // new claims of a block a left member still names
	reusedExpired int // new claims of a block a failed member past its TTL still names
	heldFailed    int // new claims made while a failed member within its TTL held a block
	rejoinKept    int // failed members that came back and kept their block
}

func newLeaseSim(t *testing.T, c LeaseConfig) *leaseSim {
	s := &leaseSim{t: t, c: c, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := range simNodes {
		tags := sampleHostTags()
		tags.PublicKey = fakeKey(byte(i * 7))
		tags.Block, tags.LeaseTime = netip.Prefix{}, 0
		s.nodes = append(s.nodes, &simNode{name: fmt.Sprintf("node-%02d", i), tags: tags})
	}
	return s
}

func (s *leaseSim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("%s\nafter: %s\nstate:\n%s", fmt.Sprintf(format, args...), strings.Join(s.trace, "; "), s.dump())
}

func (s *leaseSim) dump() string {
	var b strings.Builder
	for _, n := range s.nodes {
		if n.joined {
			fmt.Fprintf(&b, "  %s %s since %s group %d blk %s lt %d\n", n.name, n.status, n.since.Format(time.TimeOnly), n.group, n.tags.Block, n.tags.LeaseTime)
		}
	}
	return b.String()
}

// view is the member list node v sees: its own group live, the other group
// as it was at the split, with the members alive then now failed since the
// split.
func (s *leaseSim) view(v *simNode) []Member {
	ms := make([]Member, 0, simNodes)
	for _, n := range s.nodes {
		switch {
		case !n.joined:
		case !s.split || n.group == v.group:
			ms = append(ms, n.member())
		default:
			if m, ok := s.snapshot[n.name]; ok {
				if m.Status == StatusAlive {
					m.Status, m.Since = StatusFailed, s.splitAt
				}
				ms = append(ms, m)
			}
		}
	}
	return ms
}

// groupView is view(v), computed once per group until the members change:
// every member of a group sees the same list.
func (s *leaseSim) groupView(v *simNode) []Member {
	g := 0
	if s.split {
		g = v.group
	}
	if s.views[g] == nil {
		s.views[g] = s.view(v)
	}
	return s.views[g]
}

// pick returns the i-th (mod count) node for which ok holds, or nil.
func (s *leaseSim) pick(i byte, ok func(*simNode) bool) *simNode {
	var c []*simNode
	for _, n := range s.nodes {
		if ok(n) {
			c = append(c, n)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[int(i)%len(c)]
}

// apply runs one operation chosen by op with argument arg.
func (s *leaseSim) apply(op, arg byte) {
	s.views = [2][]Member{}
	switch op % 8 {
	case 0, 1: // join a new node, or one that left, with no lease
		n := s.nodes[int(arg)%simNodes]
		if n.joined && n.status != StatusLeft {
			return
		}
		n.joined, n.status, n.since = true, StatusAlive, s.now
		n.tags.Block, n.tags.LeaseTime = netip.Prefix{}, 0
		if s.split {
			n.group = int(arg>>5) & 1
		}
		s.trace = append(s.trace, "join "+n.name)
	case 2: // graceful leave
		if n := s.pick(arg, func(n *simNode) bool { return n.joined && n.status == StatusAlive }); n != nil {
			n.status, n.since = StatusLeft, s.now
			s.trace = append(s.trace, "leave "+n.name)
		}
	case 3: // crash
		if n := s.pick(arg, func(n *simNode) bool { return n.joined && n.status == StatusAlive }); n != nil {
			n.status, n.since = StatusFailed, s.now
			s.trace = append(s.trace, "fail "+n.name)
		}
	case 4: // a crashed node comes back with the tags it persisted
		if n := s.pick(arg, func(n *simNode) bool { return n.joined && n.status == StatusFailed }); n != nil {
			n.status, n.since = StatusAlive, s.now
			s.trace = append(s.trace, "rejoin "+n.name)
			s.rejoined = n
		}
	case 5:
		if s.split {
			return
		}
		s.split, s.splitAt = true, s.now
		s.snapshot = map[string]Member{}
		x := uint32(arg) * 2654435761
		for i, n := range s.nodes {
			n.group = int(x>>(i%32)) & 1
			if n.joined {
				s.snapshot[n.name] = n.member()
			}
		}
		s.trace = append(s.trace, fmt.Sprintf("split %08x", x))
	case 6:
		if s.split {
			s.split = false
			s.trace = append(s.trace, "heal")
		}
	case 7:
		d := []time.Duration{30 * time.Second, 2 * time.Minute, 6 * time.Minute, 11 * time.Minute}[arg%4]
		s.now = s.now.Add(d)
		s.trace = append(s.trace, "wait "+d.String())
	}
}

// oracleClaim restates the claim rule on its own: valid tags, one block of
// the pool, from a member alive or failed for less than the TTL.
func (s *leaseSim) oracleClaim(m Member) (netip.Prefix, bool) {
	b := m.Tags.Block
	if m.TagsErr != nil || !s.oracleInPool(b) {
		return netip.Prefix{}, false
	}
	if m.Status == StatusAlive || m.Status == StatusFailed && s.now.Sub(m.Since) < s.c.TTL {
		return b, true
	}
	return netip.Prefix{}, false
}

func (s *leaseSim) oracleInPool(b netip.Prefix) bool {
	return b.IsValid() && b.Masked() == b && b.Bits() == s.c.BlockBits &&
		b.Addr().Is4() == s.c.Range.Addr().Is4() && s.c.Range.Contains(b.Addr())
}

// oracleOwns reports whether n owns its block in view: a valid claim that
// no other claim of the same block precedes (claim time, then name).
func (s *leaseSim) oracleOwns(n *simNode, view []Member) bool {
	b, ok := s.oracleClaim(n.member())
	if !ok {
		return false
	}
	for _, m := range view {
		if mb, ok := s.oracleClaim(m); ok && m.Name != n.name && mb == b {
			if m.Tags.LeaseTime < n.tags.LeaseTime || m.Tags.LeaseTime == n.tags.LeaseTime && m.Name < n.name {
				return false
			}
		}
	}
	return true
}

// checkDecision holds one NextLease answer to the rules: keep exactly when
// owning; a new block only if no alive or failed-within-TTL member claims
// it (left members' blocks are free at once); ErrNoFreeBlock only when every
// block is so claimed.
func (s *leaseSim) checkDecision(n *simNode, view []Member, block netip.Prefix, lt int64, changed bool, err error) {
	s.t.Helper()
	owns := s.oracleOwns(n, view)
	claimedByOthers := map[netip.Prefix]bool{}
	for _, m := range view {
		if b, ok := s.oracleClaim(m); ok && m.Name != n.name {
			claimedByOthers[b] = true
		}
	}
	switch {
	case err != nil:
		if !errors.Is(err, ErrNoFreeBlock) {
			s.fatalf("%s: NextLease: %v", n.name, err)
		}
		if owns {
			s.fatalf("%s: ErrNoFreeBlock while owning %s", n.name, n.tags.Block)
		}
		if all := 1 << (s.c.BlockBits - s.c.Range.Bits()); len(claimedByOthers) != all {
			s.fatalf("%s: ErrNoFreeBlock with %d of %d blocks claimed", n.name, len(claimedByOthers), all)
		}
		s.stats.noFreeBlock++
	case !changed:
		if !owns || block != n.tags.Block || lt != n.tags.LeaseTime {
			s.fatalf("%s: keeps %s (lt %d) but owns %v its %s (lt %d)", n.name, block, lt, owns, n.tags.Block, n.tags.LeaseTime)
		}
	default:
		if owns {
			s.fatalf("%s: moves from %s, which it owns, to %s", n.name, n.tags.Block, block)
		}
		if !s.oracleInPool(block) || claimedByOthers[block] || lt != s.now.UnixMilli() {
			s.fatalf("%s: claims %s at %d, in pool %v, claimed by another %v", n.name, block, lt, s.oracleInPool(block), claimedByOthers[block])
		}
		for _, m := range view {
			if m.Name == n.name || m.TagsErr != nil {
				continue
			}
			switch {
			case m.Tags.Block == block && m.Status == StatusLeft:
				s.stats.reusedLeft++
			case m.Tags.Block == block && m.Status == StatusFailed:
				s.stats.reusedExpired++
			case m.Status == StatusFailed && s.now.Sub(m.Since) < s.c.TTL && m.Tags.Block.IsValid():
				s.stats.heldFailed++
			}
		}
	}
}

// settle lets every alive node apply NextLease to its view, all at once,
// until no node changes. It returns the nodes that ended with no block.
func (s *leaseSim) settle() map[string]bool {
	s.t.Helper()
	type change struct {
		n     *simNode
		block netip.Prefix
		lt    int64
	}
	for range simMaxRounds {
		var changes []change
		noBlock := map[string]bool{}
		for i, n := range s.nodes {
			if !n.joined || n.status != StatusAlive {
				continue
			}
			view := s.groupView(n)
			arg := view
			if i%2 == 1 { // half the nodes pass a list without themselves
				arg = make([]Member, 0, len(view))
				for _, m := range view {
					if m.Name != n.name {
						arg = append(arg, m)
					}
				}
			}
			block, lt, changed, err := NextLease(s.c, n.member(), arg, s.now)
			s.checkDecision(n, view, block, lt, changed, err)
			if err != nil {
				noBlock[n.name] = true
			}
			if changed {
				changes = append(changes, change{n, block, lt})
			}
		}
		if len(changes) == 0 {
			return noBlock
		}
		for _, c := range changes {
			c.n.tags.Block, c.n.tags.LeaseTime = c.block, c.lt
		}
		s.views = [2][]Member{}
	}
	s.fatalf("leases did not settle in %d rounds", simMaxRounds)
	return nil
}

// checkDistinct: alive members that see each other never hold one block.
func (s *leaseSim) checkDistinct(noBlock map[string]bool) {
	s.t.Helper()
	holder := map[[2]any]string{}
	for _, n := range s.nodes {
		if !n.joined || n.status != StatusAlive || noBlock[n.name] {
			continue
		}
		group := 0
		if s.split {
			group = n.group
		}
		k := [2]any{group, n.tags.Block}
		if other, ok := holder[k]; ok {
			s.fatalf("%s and %s both hold %s", other, n.name, n.tags.Block)
		}
		holder[k] = n.name
	}
}

func runLeaseSim(t *testing.T, data []byte) simStats {
	if len(data) == 0 {
		return simStats{}
	}
	pools := simPools()
	s := newLeaseSim(t, pools[int(data[0])%len(pools)])
	data = data[1:]
	noBlock := s.settle()
	for i := 0; i+1 < len(data) && i < 2*simMaxOps; i += 2 {
		// What each alive holder owns before the operation.
		held := map[string]netip.Prefix{}
		for _, n := range s.nodes {
			if n.joined && n.status == StatusAlive && !noBlock[n.name] {
				held[n.name] = n.tags.Block
			}
		}
		s.rejoined = nil
		s.apply(data[i], data[i+1])
		rejoinedBlock := netip.Prefix{}
		if s.rejoined != nil {
			rejoinedBlock = s.rejoined.tags.Block
		}
		// Whom the operation itself put on the losing side of a conflict.
		losing := map[string]bool{}
		for _, n := range s.nodes {
			if _, ok := held[n.name]; ok && n.status == StatusAlive && !s.oracleOwns(n, s.groupView(n)) {
				losing[n.name] = true
			}
		}
		noBlock = s.settle()
		s.checkDistinct(noBlock)
		// Nobody loses a block because others joined, left, failed or the
		// clock moved: only a conflict the operation created moves a holder.
		for _, n := range s.nodes {
			if b, ok := held[n.name]; ok && n.status == StatusAlive && !losing[n.name] && n.tags.Block != b {
				s.fatalf("%s moved from %s to %s without losing a conflict", n.name, b, n.tags.Block)
			}
			if _, ok := held[n.name]; ok && losing[n.name] {
				s.stats.moved++
			}
		}
		if s.rejoined != nil && rejoinedBlock.IsValid() && s.rejoined.tags.Block == rejoinedBlock {
			s.stats.rejoinKept++
		}
	}
	// Heal and settle: a split brain ends with no duplicates.
	s.apply(6, 0)
	s.checkDistinct(s.settle())
	return s.stats
}

// leaseSimSeeds are the seed corpus of FuzzLeaseConvergence.
func leaseSimSeeds() [][]byte {
	// Hand-written stories (pool byte, then op/arg pairs; ops: 0,1 join,
	// 2 leave, 3 fail, 4 rejoin, 5 split, 6 heal, 7 wait).
	seeds := [][]byte{
		{0, 0, 1, 0, 2, 0, 3, 2, 0, 0, 4},                                   // join, leave, rejoin as new
		{0, 0, 1, 0, 2, 3, 0, 7, 1, 0, 5, 4, 0, 7, 3, 0, 6, 4, 0},           // fail, wait out TTL, block reused, failed node returns
		{2, 0, 1, 0, 2, 0, 3, 5, 0x55, 0, 4, 0, 36, 7, 3, 0, 7, 1, 5, 6, 0}, // split, joins on both sides, heal
		{1, 5, 0xa5, 7, 3, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 6, 0},              // split first, long wait, joins, heal
	}
	// Fill the small pools past full, then churn.
	for pool := range byte(len(simPools())) {
		fill := []byte{pool}
		for i := range simNodes {
			fill = append(fill, 0, byte(i))
		}
		seeds = append(seeds, append(fill, 2, 3, 3, 5, 7, 3, 4, 0, 5, 0x3c, 7, 3, 2, 1, 0, 30, 6, 0, 4, 1))
	}
	r := rand.New(rand.NewPCG(7, 11))
	for range 24 {
		b := make([]byte, 1+2*(16+r.IntN(simMaxOps-16)))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// TestLeaseSimCoverage shows that the seed corpus reaches every rule the
// simulation checks, so a passing FuzzLeaseConvergence means something.
func TestLeaseSimCoverage(t *testing.T) {
	var total simStats
	for _, seed := range leaseSimSeeds() {
		st := runLeaseSim(t, seed)
		total.moved += st.moved
		total.noFreeBlock += st.noFreeBlock
		total.reusedLeft += st.reusedLeft
		total.reusedExpired += st.reusedExpired
		total.heldFailed += st.heldFailed
		total.rejoinKept += st.rejoinKept
	}
	t.Logf("seed corpus: %+v", total)
	if total.moved == 0 || total.noFreeBlock == 0 || total.reusedLeft == 0 || total.reusedExpired == 0 || total.heldFailed == 0 || total.rejoinKept == 0 {
		t.Errorf("seed corpus leaves a rule unexercised: %+v", total)
	}
}

func FuzzLeaseConvergence(f *testing.F) {
	for _, seed := range leaseSimSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) { runLeaseSim(t, data) })
}
