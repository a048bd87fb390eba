package plan

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"time"
)

// maxPoolBlocks bounds a pool to 2^20 blocks so that ClaimBlock's probe over
// the whole pool stays cheap.
const maxPoolBlocks = 1 << 20

// ErrNoFreeBlock is returned (wrapped) by ClaimBlock and NextLease when every
// block of the pool is claimed by a member that is alive or failed within
// the lease TTL.
var ErrNoFreeBlock = errors.New("no free block")

// Validate checks that the pool can be cut into blocks: Range a network
// address, BlockBits between its length and the address size, at most 2^20
// blocks, and a positive TTL.
func (c LeaseConfig) Validate() error {
	if !c.Range.IsValid() {
		return fmt.Errorf("lease pool: range %s is not a valid prefix", c.Range)
	}
	if c.Range != c.Range.Masked() {
		return fmt.Errorf("lease pool: range %s is not a network address, want %s", c.Range, c.Range.Masked())
	}
	if c.Range.Addr().Is4In6() {
		return fmt.Errorf("lease pool: range %s is IPv4-mapped IPv6, write it as IPv4", c.Range)
	}
	if c.BlockBits < c.Range.Bits() || c.BlockBits > c.Range.Addr().BitLen() {
		return fmt.Errorf("lease pool %s: block length /%d, want /%d to /%d", c.Range, c.BlockBits, c.Range.Bits(), c.Range.Addr().BitLen())
	}
	if c.BlockBits-c.Range.Bits() > 20 {
		return fmt.Errorf("lease pool %s: /%d blocks make 2^%d blocks, at most %d allowed", c.Range, c.BlockBits, c.BlockBits-c.Range.Bits(), maxPoolBlocks)
	}
	if c.TTL <= 0 {
		return fmt.Errorf("lease pool %s: TTL %s, want > 0", c.Range, c.TTL)
	}
	return nil
}

// blocks is the number of blocks in a valid pool.
func (c LeaseConfig) blocks() int { return 1 << (c.BlockBits - c.Range.Bits()) }

// block returns block i (0 <= i < c.blocks()) of a valid pool: the Range
// address with i written into the bits between Range.Bits() and BlockBits.
func (c LeaseConfig) block(i int) netip.Prefix {
	a := c.Range.Addr().As16()
	off := 0
	if c.Range.Addr().Is4() {
		off = 96 // As16 puts IPv4 in the last 4 bytes
	}
	for b := 0; b < c.BlockBits-c.Range.Bits(); b++ {
		if i>>b&1 == 1 {
			pos := off + c.BlockBits - 1 - b
			a[pos/8] |= 0x80 >> (pos % 8)
		}
	}
	addr := netip.AddrFrom16(a)
	if c.Range.Addr().Is4() {
		addr = addr.Unmap()
	}
	return netip.PrefixFrom(addr, c.BlockBits)
}

// InPool reports whether b is exactly one block of the pool.
func (c LeaseConfig) InPool(b netip.Prefix) bool {
	return b.IsValid() && b == b.Masked() && b.Bits() == c.BlockBits &&
		b.Addr().Is4() == c.Range.Addr().Is4() && c.Range.Contains(b.Addr())
}

// claim returns the block m claims, if its claim counts at now (lease
// rule 3 in the package comment): valid tags naming one block of the pool, from a member
// that is alive, or failed for less than the TTL. A left member's claim is
// void at once; so is the claim of a member in a state this code does not
// know, which is safer than holding a block for it forever.
func (c LeaseConfig) claim(m Member, now time.Time) (netip.Prefix, bool) {
	if m.TagsErr != nil || !c.InPool(m.Tags.Block) {
		return netip.Prefix{}, false
	}
	switch m.Status {
	case StatusAlive:
	case StatusFailed:
		if now.Sub(m.Since) >= c.TTL {
			return netip.Prefix{}, false
		}
	default:
		return netip.Prefix{}, false
	}
	return m.Tags.Block, true
}

// BlockOwner is a claimed block and the member that owns it.
type BlockOwner struct {
	Block netip.Prefix
	Owner string
	// LeaseTime is the owner's claim time in Unix milliseconds.
	LeaseTime int64
}

// Conflict is a block claimed by two members; Loser must lease another.
type Conflict struct {
	Block  netip.Prefix
	Winner string
	Loser  string
}

// Leases is who owns which block of one pool, as ResolveLeases decided it.
// The zero Leases has no owners.
type Leases struct {
	// Config is the pool the leases were resolved over.
	Config LeaseConfig
	// Owners lists every claimed block with its owner, sorted by block.
	Owners []BlockOwner
	// Conflicts lists every losing claim, sorted by block, then by the
	// order of the claims (claim time, then name).
	Conflicts []Conflict

	byBlock map[netip.Prefix]int // index into Owners
	byOwner map[string]int       // index into Owners
	byLoser map[string]int       // index into Conflicts
}

// Owner returns the member that owns block, if anyone claims it.
func (l Leases) Owner(block netip.Prefix) (string, bool) {
	i, ok := l.byBlock[block]
	if !ok {
		return "", false
	}
	return l.Owners[i].Owner, true
}

// OwnedBlock returns the block member name owns: its claim counts and it is
// the sole claimant or the winner of the conflict.
func (l Leases) OwnedBlock(name string) (netip.Prefix, bool) {
	i, ok := l.byOwner[name]
	if !ok {
		return netip.Prefix{}, false
	}
	return l.Owners[i].Block, true
}

// LostConflict returns the conflict member name lost, if it lost one.
func (l Leases) LostConflict(name string) (Conflict, bool) {
	i, ok := l.byLoser[name]
	if !ok {
		return Conflict{}, false
	}
	return l.Conflicts[i], true
}

// ResolveLeases decides, from one member list, who owns each claimed block
// of the pool c (lease rule 2). The earliest claim wins:
// lowest LeaseTime, then lowest name, an order every member computes alike
// whatever order it lists the members in. Names are unique in a Serf
// cluster; should a name repeat, its first entry counts.
func ResolveLeases(c LeaseConfig, members []Member, now time.Time) Leases {
	type claim struct {
		block netip.Prefix
		name  string
		lt    int64
	}
	claims := make([]claim, 0, len(members))
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		if b, ok := c.claim(m, now); ok {
			claims = append(claims, claim{b, m.Name, m.Tags.LeaseTime})
		}
	}
	// By block, then in claim order: the first claim of each block wins.
	slices.SortFunc(claims, func(x, y claim) int {
		return cmp.Or(x.block.Compare(y.block), cmp.Compare(x.lt, y.lt), cmp.Compare(x.name, y.name))
	})

	l := Leases{
		Config:  c,
		byBlock: make(map[netip.Prefix]int, len(claims)),
		byOwner: make(map[string]int, len(claims)),
	}
	for i, cl := range claims {
		if i > 0 && claims[i-1].block == cl.block {
			winner := l.Owners[len(l.Owners)-1].Owner
			if l.byLoser == nil {
				l.byLoser = map[string]int{}
			}
			l.byLoser[cl.name] = len(l.Conflicts)
			l.Conflicts = append(l.Conflicts, Conflict{Block: cl.block, Winner: winner, Loser: cl.name})
			continue
		}
		l.byBlock[cl.block] = len(l.Owners)
		l.byOwner[cl.name] = len(l.Owners)
		l.Owners = append(l.Owners, BlockOwner{Block: cl.block, Owner: cl.name, LeaseTime: cl.lt})
	}
	return l
}

// ClaimBlock picks a block for member self that no other member claims:
// none alive, none failed within the TTL, not even a conflict's loser
// (lease rule 1). The search starts at a block chosen by a
// hash of the name, so nodes joining together rarely pick the same one, and
// walks the pool from there with wrap-around. Self's own claim is ignored:
// if self owns its block the block is free for it, and if self lost it the
// winner's claim keeps it taken.
func ClaimBlock(c LeaseConfig, self string, members []Member, now time.Time) (netip.Prefix, error) {
	if err := c.Validate(); err != nil {
		return netip.Prefix{}, fmt.Errorf("claim block for %s: %w", self, err)
	}
	taken := map[netip.Prefix]bool{}
	for _, m := range members {
		if m.Name == self {
			continue
		}
		if b, ok := c.claim(m, now); ok {
			taken[b] = true
		}
	}
	n := c.blocks()
	if len(taken) < n {
		h := fnv.New64a()
		h.Write([]byte(self))
		start := int(h.Sum64() % uint64(n))
		for j := range n {
			if b := c.block((start + j) % n); !taken[b] {
				return b, nil
			}
		}
	}
	return netip.Prefix{}, fmt.Errorf("claim block for %s: pool %s: all %d /%d blocks claimed: %w", self, c.Range, n, c.BlockBits, ErrNoFreeBlock)
}

// NextLease decides what block self should announce. It keeps self's block
// if self owns it (sole claimant or winner of the conflict); if self has no
// block, or a block outside the pool, or lost its block to an earlier claim,
// it claims a new one with claimTime now in Unix milliseconds and changed
// true. members may or may not include self; self's entry is replaced by
// self, which counts as alive since it is the one asking.
//
// On error (ErrNoFreeBlock, an invalid pool) it returns no block: the caller
// keeps announcing what it has and tries again later.
func NextLease(c LeaseConfig, self Member, members []Member, now time.Time) (block netip.Prefix, claimTime int64, changed bool, err error) {
	if err := c.Validate(); err != nil {
		return netip.Prefix{}, 0, false, fmt.Errorf("lease for %s: %w", self.Name, err)
	}
	self.Status = StatusAlive
	view := make([]Member, 0, len(members)+1)
	view = append(view, self)
	for _, m := range members {
		if m.Name != self.Name {
			view = append(view, m)
		}
	}
	if b, ok := ResolveLeases(c, view, now).OwnedBlock(self.Name); ok {
		return b, self.Tags.LeaseTime, false, nil
	}
	b, err := ClaimBlock(c, self.Name, view, now)
	if err != nil {
		return netip.Prefix{}, 0, false, err
	}
	ms := now.UnixMilli()
	if ms < 0 {
		// Tags cannot carry it, and it would beat every real claim.
		return netip.Prefix{}, 0, false, fmt.Errorf("lease for %s: clock %s is before 1970", self.Name, now)
	}
	return b, ms, true, nil
}

// MergeLeases joins the leases of pools that do not overlap (host blocks
// and sidecar addresses) into one: owners sorted by block, conflicts in
// the order of the pools. Config is the first pool's; the pools share the
// TTL, the only field the readers of a merged Leases use.
func MergeLeases(ls ...Leases) Leases {
	if len(ls) == 0 {
		return Leases{}
	}
	out := Leases{Config: ls[0].Config, byBlock: map[netip.Prefix]int{}, byOwner: map[string]int{}}
	for _, l := range ls {
		out.Owners = append(out.Owners, l.Owners...)
		out.Conflicts = append(out.Conflicts, l.Conflicts...)
	}
	slices.SortFunc(out.Owners, func(x, y BlockOwner) int { return x.Block.Compare(y.Block) })
	for i, o := range out.Owners {
		out.byBlock[o.Block] = i
		// A name owns at most one block in each pool's view; should a
		// member hold claims in two pools, its first block counts.
		if _, dup := out.byOwner[o.Owner]; !dup {
			out.byOwner[o.Owner] = i
		}
	}
	for i, c := range out.Conflicts {
		if out.byLoser == nil {
			out.byLoser = map[string]int{}
		}
		if _, dup := out.byLoser[c.Loser]; !dup {
			out.byLoser[c.Loser] = i
		}
	}
	return out
}

// FirstExpiry is when the first failed member of members that holds a
// block passes the lease TTL after `after`; zero if none will.
func FirstExpiry(members []Member, ttl time.Duration, after time.Time) time.Time {
	var next time.Time
	for _, m := range members {
		if m.Status != StatusFailed || !m.Tags.Block.IsValid() {
			continue
		}
		if end := m.Since.Add(ttl); end.After(after) && (next.IsZero() || end.Before(next)) {
			next = end
		}
	}
	return next
}

// NodeAddress is the node's own overlay address in its block: the first host
// address of a host-mode block, the address itself for a /32.
func NodeAddress(block netip.Prefix) netip.Addr {
	if block.Bits() == block.Addr().BitLen() {
		return block.Addr()
	}
	return block.Addr().Next()
}
