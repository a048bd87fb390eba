package tunnel

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// This file speaks WireGuard's cross-platform UAPI text protocol
// (https://www.wireguard.com/xplatform/) for the in-process userspace
// devices: the same key=value lines `wg` writes to the UAPI socket.

// encodeUAPIPeers renders peer changes as a UAPI "set" body.
func encodeUAPIPeers(pcs []wgtypes.PeerConfig) string {
	var b strings.Builder
	for _, pc := range pcs {
		fmt.Fprintf(&b, "public_key=%s\n", hexKey(pc.PublicKey))
		if pc.Remove {
			b.WriteString("remove=true\n")
			continue
		}
		if pc.UpdateOnly {
			b.WriteString("update_only=true\n")
		}
		if pc.PresharedKey != nil {
			fmt.Fprintf(&b, "preshared_key=%s\n", hexKey(*pc.PresharedKey))
		}
		if pc.Endpoint != nil {
			fmt.Fprintf(&b, "endpoint=%s\n", pc.Endpoint.AddrPort())
		}
		if pc.PersistentKeepaliveInterval != nil {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(pc.PersistentKeepaliveInterval.Seconds()))
		}
		if pc.ReplaceAllowedIPs {
			b.WriteString("replace_allowed_ips=true\n")
		}
		for _, n := range pc.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", n.String())
		}
	}
	return b.String()
}

// parseUAPIGet parses a UAPI "get" response into Stats. Unknown keys are
// skipped (newer wireguard-go versions add some); malformed values are errors.
// The private key line is read past and never kept.
func parseUAPIGet(s string) (Stats, error) {
	var g uapiGet
	sc := bufio.NewScanner(strings.NewReader(s))
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" {
			continue
		}
		key, val, ok := strings.Cut(text, "=")
		if !ok {
			return Stats{}, fmt.Errorf("uapi line %d: no '='", line)
		}
		if err := g.set(key, val); err != nil {
			var errno uapiErrno
			if errors.As(err, &errno) {
				return Stats{}, err
			}
			return Stats{}, fmt.Errorf("uapi line %d: %s: %w", line, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Stats{}, fmt.Errorf("uapi: %w", err)
	}
	g.flush()
	return g.st, nil
}

// uapiErrno is the error a "get" response reports with a nonzero errno.
type uapiErrno string

func (e uapiErrno) Error() string { return "uapi: errno=" + string(e) }

// uapiGet is what parseUAPIGet has read so far: the device's fields, and
// the peer whose lines are being read (from its public_key line on).
type uapiGet struct {
	st            Stats
	cur           *PeerStats
	hsSec, hsNsec int64
}

// set takes one key=value line.
func (g *uapiGet) set(key, val string) error {
	switch {
	case key == "errno":
		if val != "0" {
			return uapiErrno(val)
		}
		return nil
	case key == "public_key":
		g.flush()
		k, err := parseHexKey(val)
		if err != nil {
			return err
		}
		g.cur = &PeerStats{PublicKey: k}
		return nil
	case g.cur == nil:
		return g.setDevice(key, val)
	default:
		return g.setPeer(key, val)
	}
}

// flush ends the current peer, if any, and adds it to the result.
func (g *uapiGet) flush() {
	if g.cur == nil {
		return
	}
	if g.hsSec != 0 || g.hsNsec != 0 {
		g.cur.LastHandshake = time.Unix(g.hsSec, g.hsNsec)
	}
	g.st.Peers = append(g.st.Peers, *g.cur)
	g.cur, g.hsSec, g.hsNsec = nil, 0, 0
}

// setDevice takes a line that comes before the first peer.
func (g *uapiGet) setDevice(key, val string) error {
	switch key {
	case "private_key":
		k, err := parseHexKey(val)
		if err != nil {
			return err
		}
		if k != (Key{}) {
			g.st.PublicKey = k.PublicKey()
		}
	case "listen_port":
		n, err := strconv.ParseUint(val, 10, 16)
		if err != nil {
			return err
		}
		g.st.ListenPort = int(n)
	}
	return nil
}

// setPeer takes a line of the current peer.
func (g *uapiGet) setPeer(key, val string) error {
	cur := g.cur
	switch key {
	case "preshared_key":
		k, err := parseHexKey(val)
		if err != nil {
			return err
		}
		cur.psk = k
	case "endpoint":
		ap, err := netip.ParseAddrPort(val)
		if err != nil {
			return err
		}
		cur.Endpoint = ap
	case "persistent_keepalive_interval":
		n, err := strconv.ParseUint(val, 10, 16)
		if err != nil {
			return err
		}
		cur.PersistentKeepalive = time.Duration(n) * time.Second
	case "allowed_ip":
		p, err := netip.ParsePrefix(val)
		if err != nil {
			return err
		}
		cur.AllowedIPs = append(cur.AllowedIPs, p)
	case "rx_bytes", "tx_bytes", "last_handshake_time_sec", "last_handshake_time_nsec":
		return g.setCount(key, val)
	}
	return nil
}

// setCount takes one of the current peer's counters.
func (g *uapiGet) setCount(key, val string) error {
	n, err := strconv.ParseInt(val, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("not a count: %q", val)
	}
	switch key {
	case "rx_bytes":
		g.cur.RxBytes = n
	case "tx_bytes":
		g.cur.TxBytes = n
	case "last_handshake_time_sec":
		g.hsSec = n
	default:
		g.hsNsec = n
	}
	return nil
}

func parseHexKey(s string) (Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != wgtypes.KeyLen {
		return Key{}, fmt.Errorf("%w: want %d hex bytes", ErrBadKey, wgtypes.KeyLen)
	}
	return Key(b), nil
}

// statsFromWgctrl converts what wgctrl reads from a kernel device.
func statsFromWgctrl(d *wgtypes.Device) Stats {
	st := Stats{Name: d.Name, PublicKey: Key(d.PublicKey), ListenPort: d.ListenPort}
	for _, p := range d.Peers {
		ps := PeerStats{
			PublicKey:           Key(p.PublicKey),
			PersistentKeepalive: p.PersistentKeepaliveInterval,
			LastHandshake:       p.LastHandshakeTime,
			RxBytes:             p.ReceiveBytes,
			TxBytes:             p.TransmitBytes,
			psk:                 Key(p.PresharedKey),
		}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.AddrPort()
		}
		for _, n := range p.AllowedIPs {
			if pfx, ok := prefixFromIPNet(n); ok {
				ps.AllowedIPs = append(ps.AllowedIPs, pfx)
			}
		}
		if !ps.LastHandshake.IsZero() && ps.LastHandshake.Unix() == 0 {
			ps.LastHandshake = time.Time{}
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

func prefixFromIPNet(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	if a.Is4In6() {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones), true
}

func toIPNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		out = append(out, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return out
}

func udpAddr(ap netip.AddrPort) *net.UDPAddr { return net.UDPAddrFromAddrPort(ap) }

func hexKey[K ~[wgtypes.KeyLen]byte](k K) string { return hex.EncodeToString(k[:]) }
