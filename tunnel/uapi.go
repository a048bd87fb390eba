package tunnel

import (
	"bufio"
	"encoding/hex"
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
	var st Stats
	var cur *PeerStats
	var hsSec, hsNsec int64
	flush := func() {
		if cur == nil {
			return
		}
		if hsSec != 0 || hsNsec != 0 {
			cur.LastHandshake = time.Unix(hsSec, hsNsec)
		}
		st.Peers = append(st.Peers, *cur)
		cur, hsSec, hsNsec = nil, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "" {
			continue
		}
		key, val, ok := strings.Cut(text, "=")
		if !ok {
			return Stats{}, fmt.Errorf("uapi line %d: no '='", line)
		}
		bad := func(err error) (Stats, error) {
			return Stats{}, fmt.Errorf("uapi line %d: %s: %w", line, key, err)
		}
		if key == "public_key" {
			flush()
			k, err := parseHexKey(val)
			if err != nil {
				return bad(err)
			}
			cur = &PeerStats{PublicKey: k}
			continue
		}
		if cur == nil {
			switch key {
			case "private_key":
				k, err := parseHexKey(val)
				if err != nil {
					return bad(err)
				}
				if k != (Key{}) {
					st.PublicKey = k.PublicKey()
				}
			case "listen_port":
				n, err := strconv.ParseUint(val, 10, 16)
				if err != nil {
					return bad(err)
				}
				st.ListenPort = int(n)
			case "errno":
				if val != "0" {
					return Stats{}, fmt.Errorf("uapi: errno=%s", val)
				}
			}
			continue
		}
		switch key {
		case "preshared_key":
			k, err := parseHexKey(val)
			if err != nil {
				return bad(err)
			}
			cur.psk = k
		case "endpoint":
			ap, err := netip.ParseAddrPort(val)
			if err != nil {
				return bad(err)
			}
			cur.Endpoint = ap
		case "persistent_keepalive_interval":
			n, err := strconv.ParseUint(val, 10, 16)
			if err != nil {
				return bad(err)
			}
			cur.PersistentKeepalive = time.Duration(n) * time.Second
		case "allowed_ip":
			p, err := netip.ParsePrefix(val)
			if err != nil {
				return bad(err)
			}
			cur.AllowedIPs = append(cur.AllowedIPs, p)
		case "rx_bytes", "tx_bytes", "last_handshake_time_sec", "last_handshake_time_nsec":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 {
				return bad(fmt.Errorf("not a count: %q", val))
			}
			switch key {
			case "rx_bytes":
				cur.RxBytes = n
			case "tx_bytes":
				cur.TxBytes = n
			case "last_handshake_time_sec":
				hsSec = n
			default:
				hsNsec = n
			}
		case "errno":
			if val != "0" {
				return Stats{}, fmt.Errorf("uapi: errno=%s", val)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Stats{}, fmt.Errorf("uapi: %w", err)
	}
	flush()
	return st, nil
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
