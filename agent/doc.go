// Package agent is weft's control plane on a node, the loop that wires the
// others: it starts gossip (package membership) with the node's WireGuard
// identity, joins the mesh, acquires a block lease, and then reconciles:
// on every membership change, lease expiry and resync it asks package plan
// for the lease, peers and routes and applies them through package tunnel
// and the kernel's routes. Around the loop it keeps the state file and
// rejoin list, the Prometheus metrics and the local API (package api).
package agent
