package tunnel

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PeerStats is what a device reports about one peer.
type PeerStats struct {
	PublicKey           Key
	Endpoint            netip.AddrPort
	AllowedIPs          []netip.Prefix
	PersistentKeepalive time.Duration
	LastHandshake       time.Time
	RxBytes, TxBytes    int64
	// psk is kept for diffing and never exported.
	psk Key
}

// Stats is what a device reports about itself.
type Stats struct {
	Name       string
	Mode       Mode
	PublicKey  Key
	ListenPort int
	Peers      []PeerStats
}

// Peer returns the stats of the peer with key k.
func (s Stats) Peer(k Key) (PeerStats, bool) {
	for _, p := range s.Peers {
		if p.PublicKey == k {
			return p, true
		}
	}
	return PeerStats{}, false
}

// diffPeers returns the wgctrl changes that turn the peers a device has
// into the desired ones, touching only the peers that differ: a peer that is
// unchanged is not in the result at all, so its session and counters live on.
// It is pure; the backends apply the result.
func diffPeers(have []PeerStats, want []Peer) ([]wgtypes.PeerConfig, error) {
	wantByKey := make(map[Key]Peer, len(want))
	for _, p := range want {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		if _, dup := wantByKey[p.PublicKey]; dup {
			return nil, fmt.Errorf("peer %s listed twice", Fingerprint(p.PublicKey))
		}
		wantByKey[p.PublicKey] = p
	}
	haveByKey := make(map[Key]PeerStats, len(have))
	for _, p := range have {
		haveByKey[p.PublicKey] = p
	}

	var out []wgtypes.PeerConfig
	for _, h := range have {
		if _, ok := wantByKey[h.PublicKey]; !ok {
			out = append(out, wgtypes.PeerConfig{PublicKey: wgtypes.Key(h.PublicKey), Remove: true})
		}
	}
	for _, w := range want {
		h, exists := haveByKey[w.PublicKey]
		pc := wgtypes.PeerConfig{PublicKey: wgtypes.Key(w.PublicKey), UpdateOnly: exists}
		changed := !exists
		if !exists || !samePrefixes(h.AllowedIPs, w.AllowedIPs) {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = toIPNets(w.AllowedIPs)
			changed = true
		}
		// A zero desired endpoint leaves whatever the peer roamed to.
		if w.Endpoint.IsValid() && (!exists || h.Endpoint != w.Endpoint) {
			pc.Endpoint = udpAddr(w.Endpoint)
			changed = true
		}
		if !exists && w.PersistentKeepalive != 0 || exists && h.PersistentKeepalive != w.PersistentKeepalive {
			ka := w.PersistentKeepalive
			pc.PersistentKeepaliveInterval = &ka
			changed = true
		}
		var psk Key
		if w.PresharedKey != nil {
			psk = *w.PresharedKey
		}
		if !exists && psk != (Key{}) || exists && h.psk != psk {
			pc.PresharedKey = (*wgtypes.Key)(&psk)
			changed = true
		}
		if changed {
			out = append(out, pc)
		}
	}
	return out, nil
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	cmp := func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	}
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// applyPeers turns the peers of the device called name, as stats reads
// them, into want: it applies diffPeers' changes, if any, with apply, and
// returns how many there were. SetPeers of every backend is this, under
// the device's lock.
func applyPeers(name string, stats func() (Stats, error), want []Peer, apply func([]wgtypes.PeerConfig) error) (int, error) {
	st, err := stats()
	if err != nil {
		return 0, err
	}
	pcs, err := diffPeers(st.Peers, want)
	if err != nil {
		return 0, fmt.Errorf("tunnel %s: %w", name, err)
	}
	if len(pcs) == 0 {
		return 0, nil
	}
	if err := apply(pcs); err != nil {
		return 0, fmt.Errorf("tunnel %s: set peers: %w", name, err)
	}
	return len(pcs), nil
}
