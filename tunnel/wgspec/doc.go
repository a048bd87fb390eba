// Package wgspec holds the plain values of a WireGuard configuration: keys,
// peers, endpoints, MTU bounds and backend names, with their parsing and
// validation. It has no device, netlink or wireguard-go code, so the agent's
// planning can compute peers without linking a data path; package tunnel
// re-exports these under its own names.
package wgspec
