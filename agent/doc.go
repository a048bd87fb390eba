// Package agent is weft's control plane on a node: Serf membership with an
// encrypted keyring, the node's WireGuard identity, pod-CIDR block leases,
// the pure desired(self, members) -> peers + routes function, and the
// reconcile loop that applies it through package tunnel.
package agent
