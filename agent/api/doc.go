// Package api is the agent's local API as its clients see it: the lease
// the CNI plugin addresses pods from, the status report `weft status`
// prints, a client for the agent's unix socket, and the handover note a
// restarting agent leaves for the CNI plugin. It depends on the standard
// library only, so the CNI plugin links none of the agent's gossip,
// WireGuard or netstack code.
package api
