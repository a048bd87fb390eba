// Package plan is the agent's pure planning: what members announce (Tags
// and their wire codec), who owns which block (ResolveLeases, NextLease,
// ClaimBlock), what this node's WireGuard peers and routes should be
// (Desired), which handshakes to hold back (HoldInitiations), and which
// member tells a newcomer of a failed member's block (FailedWinners). Every
// function takes values, including the time, and returns values: no gossip,
// device, file or clock of its own, so every member with the same view
// computes the same plan and tests can drive it directly.
//
// The lease rules, which every member applies to its own view:
//
//  1. A member claims a block nobody else claims: no alive member, no
//     member failed for less than the lease TTL, not even the loser of a
//     conflict (ClaimBlock).
//  2. Where two members claim one block, the earlier claim wins: the lower
//     lease time, then the lower name (ResolveLeases). The loser re-leases.
//  3. A claim counts while its member is alive, or failed for less than
//     the TTL; a member that left frees its block at once.
package plan
