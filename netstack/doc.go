// Package netstack is the userspace TCP/IP side of weft's netstack tunnel
// backend.
//
// A [Stack] is a gVisor TCP/IP stack whose only network interface is a
// [golang.zx2c4.com/wireguard/tun.Device]: wireguard-go runs its device on
// top of it exactly as it runs on a kernel TUN, writing decrypted packets in
// with Write and taking packets to encrypt out with Read. Programs in the
// same process reach the overlay through the stack with DialContext, Listen
// and ListenPacket, without a kernel interface or any capability.
//
// Unlike wireguard-go's own tun/netstack, weft owns the gVisor stack here, so
// transport handlers (forwarding every port to 127.0.0.1) can be installed on
// it, and the device reads and writes packets in batches.
package netstack
