package wgspec

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Mode names a backend.
type Mode string

// The backends, in the order Detect tries them, and Auto to let it choose.
const (
	ModeAuto     Mode = "auto"
	ModeKernel   Mode = "kernel"
	ModeTUN      Mode = "tun"
	ModeNetstack Mode = "netstack"
)

// MTU bounds: IPv6 needs 1280 on every link, and 9000 is the largest jumbo
// frame an underlay offers in practice.
const (
	MinMTU = 1280
	MaxMTU = 9000
)

// ValidateMTU checks that mtu is within [MinMTU, MaxMTU].
func ValidateMTU(mtu int) error {
	if mtu < MinMTU || mtu > MaxMTU {
		return fmt.Errorf("mtu %d out of range %d-%d", mtu, MinMTU, MaxMTU)
	}
	return nil
}

// Peer is the desired configuration of one peer.
type Peer struct {
	PublicKey Key
	// Endpoint is where to send to; the zero value leaves it to roaming.
	Endpoint netip.AddrPort
	// AllowedIPs are the ranges routed to and accepted from this peer.
	AllowedIPs []netip.Prefix
	// PersistentKeepalive is 0 (off) or 1s-65535s.
	PersistentKeepalive time.Duration
	// PresharedKey adds a symmetric key to the handshake; nil means none.
	PresharedKey *Key
}

// Validate checks one peer's fields.
func (p Peer) Validate() error {
	if p.PublicKey == (Key{}) {
		return errors.New("peer: public key is unset")
	}
	if p.Endpoint.IsValid() && p.Endpoint.Port() == 0 {
		return fmt.Errorf("peer %s: endpoint %s has port 0", Fingerprint(p.PublicKey), p.Endpoint)
	}
	for _, pfx := range p.AllowedIPs {
		if !pfx.IsValid() || pfx != pfx.Masked() {
			return fmt.Errorf("peer %s: allowed ip %s is not a network address", Fingerprint(p.PublicKey), pfx)
		}
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535*time.Second || p.PersistentKeepalive%time.Second != 0 {
		return fmt.Errorf("peer %s: keepalive %s: want whole seconds 0-65535", Fingerprint(p.PublicKey), p.PersistentKeepalive)
	}
	return nil
}

// ParseEndpoint parses a WireGuard endpoint "ip:port" or "[ipv6]:port".
// Host names are refused: the device must not depend on DNS.
func ParseEndpoint(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: want ip:port or [ipv6]:port", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: port 0", s)
	}
	if ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: not a unicast address", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), nil
}
