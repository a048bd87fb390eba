package plan

import (
	"net/netip"
	"time"

	"github.com/weftnet/weft/tunnel/wgspec"
)

// TagVersion is the version of the tag schema this agent writes and reads.
const TagVersion = 1

// Tags is what a member announces about itself in its Serf tags. The wire
// form (short keys v, pk, ep, blk, lt, m, mtu) is Encode and DecodeTags.
type Tags struct {
	// Version is the tag schema version ("v").
	Version int
	// PublicKey is the member's WireGuard public key ("pk").
	PublicKey wgspec.Key
	// Endpoint is the underlay host:port of its WireGuard device ("ep").
	Endpoint netip.AddrPort
	// Block is the leased block ("blk"): a /24 (by default) of the cluster
	// range for a host-mode node, a /32 of the sidecar range for a sidecar.
	// The zero Prefix means no lease yet.
	Block netip.Prefix
	// LeaseTime is when the lease was claimed ("lt"), in Unix milliseconds.
	// Serf keeps its Lamport clocks private, so a wall-clock claim time with
	// the member name as tie-break is the order every member agrees on.
	LeaseTime int64
	// Mode is the member's tunnel backend or "sidecar" ("m").
	Mode string
	// MTU is the tunnel MTU the member uses ("mtu").
	MTU int
}

// Status is a member's state as gossip reports it.
type Status int

// Member states. Serf's "leaving" counts as alive until the leave completes.
const (
	StatusAlive Status = iota
	StatusFailed
	StatusLeft
)

func (s Status) String() string {
	switch s {
	case StatusAlive:
		return "alive"
	case StatusFailed:
		return "failed"
	case StatusLeft:
		return "left"
	}
	return "unknown"
}

// Member is one mesh member as this agent sees it.
type Member struct {
	Name   string
	Status Status
	// Since is when this agent saw the member enter Status (the failed
	// lease TTL counts from here).
	Since time.Time
	Tags  Tags
	// TagsErr is set when the member's tags did not decode or validate; such
	// a member is listed but never becomes a peer, a route or a lease holder.
	TagsErr error
	// Addr is the member's gossip address.
	Addr netip.AddrPort
}

// LeaseConfig describes one address pool that members lease blocks from.
type LeaseConfig struct {
	// Range is the pool, e.g. 100.64.0.0/16 (host mode) or 100.127.0.0/16
	// (sidecars).
	Range netip.Prefix
	// BlockBits is the prefix length of one block: 24 for host mode, 32 for
	// sidecars.
	BlockBits int
	// TTL is how long a failed member keeps its block.
	TTL time.Duration
}
