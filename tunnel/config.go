package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"

	"github.com/weftnet/weft/tunnel/wgspec"
)

// Mode names a backend.
type Mode = wgspec.Mode

// The backends, in the order Detect tries them, and Auto to let it choose.
const (
	ModeAuto     = wgspec.ModeAuto
	ModeKernel   = wgspec.ModeKernel
	ModeTUN      = wgspec.ModeTUN
	ModeNetstack = wgspec.ModeNetstack
)

// ParseMode accepts auto, kernel, tun or netstack ("" means auto).
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "", ModeAuto:
		return ModeAuto, nil
	case ModeKernel, ModeTUN, ModeNetstack:
		return m, nil
	}
	return "", fmt.Errorf("unknown tunnel mode %q: want auto, kernel, tun or netstack", s)
}

// MTU bounds: IPv6 needs 1280 on every link, and 9000 is the largest jumbo
// frame an underlay offers in practice.
const (
	MinMTU = wgspec.MinMTU
	MaxMTU = wgspec.MaxMTU
	// Overhead is what WireGuard adds to a packet on an IPv6 underlay
	// (40 IPv6 + 8 UDP + 32 WireGuard); the tunnel MTU is the underlay's minus
	// this, which is safe on IPv4 and IPv6 alike.
	Overhead = 80
	// DefaultListenPort is WireGuard's registered port.
	DefaultListenPort = 51820
)

// Config describes one device.
type Config struct {
	// Name is the interface name (at most 15 bytes). For userspace devices it
	// also names the UAPI socket /var/run/wireguard/<Name>.sock, so two
	// devices on one filesystem need different names.
	Name string
	// Mode picks the backend; ModeAuto (or "") runs Detect.
	Mode Mode
	// PrivateKey is the device's identity; required.
	PrivateKey PrivateKey
	// ListenPort is the UDP port for WireGuard; 0 picks a free one.
	ListenPort int
	// Address is the device's overlay address with its prefix, e.g.
	// 100.64.1.0/32 (optional: the netstack backend needs at least one).
	Address netip.Prefix
	// MTU of the device; 0 means 1420.
	MTU int
	// Persist keeps a tun-mode interface (with its addresses and routes)
	// when the process dies without Close, and a later Open of the same name
	// adopts it instead of creating a new one: a restarted agent does not
	// disturb the routes, and TCP streams across the node survive the gap.
	// Kernel links persist anyway; netstack devices cannot.
	Persist bool
	// UAPIOptional lets a userspace device come up without its UAPI socket
	// when /var/run/wireguard cannot be written (an unprivileged sidecar on
	// a read-only root): `wg show` cannot reach it then, the rest works.
	UAPIOptional bool
	// Logger receives the backend's logs; nil discards them.
	Logger *slog.Logger
	// Probes lets tests force what Detect sees; nil fields mean the real probe.
	Probes Probes
}

func (c *Config) validate() error {
	if err := ValidateInterfaceName(c.Name); err != nil {
		return err
	}
	if c.PrivateKey.IsZero() {
		return errors.New("tunnel config: private key is unset")
	}
	if c.ListenPort < 0 || c.ListenPort > 65535 {
		return fmt.Errorf("tunnel config: listen port %d out of range 0-65535", c.ListenPort)
	}
	if c.MTU == 0 {
		c.MTU = 1420
	}
	if err := ValidateMTU(c.MTU); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// ValidateInterfaceName checks a Linux interface name: 1-15 bytes, no '/',
// no whitespace, not "." or "..".
func ValidateInterfaceName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return fmt.Errorf("interface name %q: want 1-15 bytes", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r <= ' ' || r > '~' {
			return fmt.Errorf("interface name %q: character %q not allowed", name, r)
		}
	}
	return nil
}

// ValidateMTU checks that mtu is within [MinMTU, MaxMTU].
func ValidateMTU(mtu int) error { return wgspec.ValidateMTU(mtu) }

// ParseMTU parses and validates a decimal MTU.
func ParseMTU(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("mtu %q: not a number", s)
	}
	if err := ValidateMTU(n); err != nil {
		return 0, err
	}
	return n, nil
}

// Peer is the desired configuration of one peer.
type Peer = wgspec.Peer

// ParseEndpoint parses a WireGuard endpoint "ip:port" or "[ipv6]:port".
// Host names are refused: the device must not depend on DNS.
func ParseEndpoint(s string) (netip.AddrPort, error) { return wgspec.ParseEndpoint(s) }

// ParseAllowedIPs parses a comma-separated list of CIDRs, as `wg set` takes
// them. Each must be a network address (100.64.1.0/24, not 100.64.1.7/24).
func ParseAllowedIPs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("allowed ip %q: not a CIDR", f)
		}
		if p.Addr().Zone() != "" {
			return nil, fmt.Errorf("allowed ip %q: zones not allowed", f)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("allowed ip %q: host bits set, did you mean %s", f, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// ParsePeerSpec parses a peer written as "PUBKEY,ENDPOINT,CIDR[,CIDR...]", the
// form `weft tunnel up --peer` takes. ENDPOINT may be empty ("KEY,,CIDR") for
// a peer that roams to us.
func ParsePeerSpec(s string) (Peer, error) {
	f := strings.Split(strings.TrimSpace(s), ",")
	if len(f) < 3 {
		return Peer{}, fmt.Errorf("peer %q: want PUBKEY,ENDPOINT,CIDR[,CIDR...]", s)
	}
	k, err := ParseKey(f[0])
	if err != nil {
		return Peer{}, fmt.Errorf("peer: %w", err)
	}
	p := Peer{PublicKey: k}
	if strings.TrimSpace(f[1]) != "" {
		if p.Endpoint, err = ParseEndpoint(f[1]); err != nil {
			return Peer{}, fmt.Errorf("peer %s: %w", Fingerprint(k), err)
		}
	}
	if p.AllowedIPs, err = ParseAllowedIPs(strings.Join(f[2:], ",")); err != nil {
		return Peer{}, fmt.Errorf("peer %s: %w", Fingerprint(k), err)
	}
	if len(p.AllowedIPs) == 0 {
		return Peer{}, fmt.Errorf("peer %s: no allowed ips", Fingerprint(k))
	}
	return p, p.Validate()
}
