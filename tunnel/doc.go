// Package tunnel is weft's data path: one WireGuard device behind a small
// interface (Open, SetPeers, Stats, Close), with three backends chosen per
// node by Detect:
//
//   - kernel: a `wireguard` link created through netlink and configured with
//     wgctrl, where the node has the module;
//   - tun: wireguard-go on /dev/net/tun with its Linux offloads (GSO/GRO),
//     serving the UAPI socket at /var/run/wireguard/<name>.sock so `wg show`
//     and wgctrl read it like a kernel device;
//   - netstack: wireguard-go on a gVisor TCP/IP stack (package netstack), for
//     nodes with neither the module nor TUN nor NET_ADMIN.
//
// SetPeers applies a diff against what the device holds, so adding, changing
// or removing one peer never disturbs the sessions of the others.
package tunnel
