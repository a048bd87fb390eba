package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/tunnel/wgspec"
)

// SkipReason says why Desired left a member out. It is a metric label, so
// the set is small and fixed.
type SkipReason string

// The reasons a member that should be reachable is not a peer.
const (
	// SkipBadTags: its tags did not decode or validate.
	SkipBadTags SkipReason = "bad-tags"
	// SkipNoLease: it announces no block, or one that is not a block of the
	// pool.
	SkipNoLease SkipReason = "no-lease"
	// SkipLostLease: it lost its block to an earlier claim and has not
	// re-leased yet.
	SkipLostLease SkipReason = "lost-lease"
	// SkipSelfKey: it announces this node's own public key.
	SkipSelfKey SkipReason = "self-key"
	// SkipDuplicateKey: another member, first by name, announces the same
	// public key; WireGuard can have only one peer per key.
	SkipDuplicateKey SkipReason = "duplicate-key"
)

// Skip is a member Desired left out, and why.
type Skip struct {
	Name   string
	Reason SkipReason
	// Detail says what exactly was wrong, for the log.
	Detail string
}

// DesiredState is what this node's WireGuard device and routing table
// should hold.
type DesiredState struct {
	// Peers are sorted by member name.
	Peers []wgspec.Peer
	// Routes are the peers' blocks, sorted.
	Routes []netip.Prefix
	// Skipped are the members that should be peers but cannot be, sorted by
	// name.
	Skipped []Skip
}

// Desired is the centre of weft: from the member
// list and the leases resolved over it, the peers and routes node self
// should have. Every other member that is alive, or failed for less than
// the lease TTL, and owns its block becomes a peer whose allowed IPs are
// that block, and the block becomes a route. Keeping a failed member within
// the TTL keeps its pods' addresses routed to it rather than to nobody
// while it reboots.
//
// Members that left, failed longer ago than the TTL, or are in a state this
// code does not know are gone, not skipped: that is the normal end of a
// member. The others that cannot be peers are listed in Skipped. Names are
// unique in a Serf cluster; should a name repeat, its first entry counts, as
// in ResolveLeases.
func Desired(self string, members []Member, leases Leases, now time.Time) DesiredState {
	seen := make(map[string]bool, len(members))
	ms := make([]Member, 0, len(members))
	var selfKey wgspec.Key
	for _, m := range members {
		if seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		if m.Name == self {
			if m.TagsErr == nil {
				selfKey = m.Tags.PublicKey
			}
			continue
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })

	var out DesiredState
	skip := func(m Member, r SkipReason, format string, args ...any) {
		out.Skipped = append(out.Skipped, Skip{Name: m.Name, Reason: r, Detail: fmt.Sprintf(format, args...)})
	}
	keyOwner := map[wgspec.Key]string{}
	for _, m := range ms {
		switch m.Status {
		case StatusAlive:
		case StatusFailed:
			if now.Sub(m.Since) >= leases.Config.TTL {
				continue
			}
		default:
			continue
		}
		if m.TagsErr != nil {
			skip(m, SkipBadTags, "%v", m.TagsErr)
			continue
		}
		block, owns := leases.OwnedBlock(m.Name)
		if !owns || block != m.Tags.Block {
			switch cf, lost := leases.LostConflict(m.Name); {
			case lost:
				skip(m, SkipLostLease, "block %s is %s's, an earlier claim", cf.Block, cf.Winner)
			case !m.Tags.Block.IsValid():
				skip(m, SkipNoLease, "announces no block")
			default:
				skip(m, SkipNoLease, "block %s is not a /%d of pool %s", m.Tags.Block, leases.Config.BlockBits, leases.Config.Range)
			}
			continue
		}
		key := m.Tags.PublicKey
		switch owner, taken := keyOwner[key]; {
		case key == (wgspec.Key{}):
			skip(m, SkipBadTags, "no public key")
			continue
		case key == selfKey:
			skip(m, SkipSelfKey, "announces this node's public key %s", wgspec.Fingerprint(key))
			continue
		case taken:
			skip(m, SkipDuplicateKey, "public key %s is already %s's", wgspec.Fingerprint(key), owner)
			continue
		}
		keyOwner[key] = m.Name
		out.Peers = append(out.Peers, wgspec.Peer{
			PublicKey:  key,
			Endpoint:   m.Tags.Endpoint,
			AllowedIPs: []netip.Prefix{block},
		})
		out.Routes = append(out.Routes, block)
	}
	slices.SortFunc(out.Routes, netip.Prefix.Compare)
	return out
}
