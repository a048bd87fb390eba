package tunnel

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func mustKey(t testing.TB) Key {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestDiffPeers(t *testing.T) {
	kb, kc, kd := mustKey(t), mustKey(t), mustKey(t)
	psk := mustKey(t)
	ep := netip.MustParseAddrPort("198.18.0.2:51820")
	ep2 := netip.MustParseAddrPort("198.18.0.9:51820")
	b := PeerStats{PublicKey: kb, Endpoint: ep, AllowedIPs: pfx("100.64.1.0/24", "100.64.9.0/24")}
	c := PeerStats{PublicKey: kc, Endpoint: ep, AllowedIPs: pfx("100.64.2.0/24")}
	want := func(s PeerStats) Peer {
		return Peer{PublicKey: s.PublicKey, Endpoint: s.Endpoint, AllowedIPs: s.AllowedIPs}
	}
	type change struct {
		key                     Key
		remove, update, replace bool
		endpoint, keepalive     bool
		psk                     bool
	}
	summarise := func(pcs []wgtypes.PeerConfig) []change {
		var out []change
		for _, pc := range pcs {
			out = append(out, change{Key(pc.PublicKey), pc.Remove, pc.UpdateOnly, pc.ReplaceAllowedIPs,
				pc.Endpoint != nil, pc.PersistentKeepaliveInterval != nil, pc.PresharedKey != nil})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		have []PeerStats
		want []Peer
		out  []change
	}{
		{"nothing to nothing", nil, nil, nil},
		{"add", nil, []Peer{want(b)}, []change{{key: kb, replace: true, endpoint: true}}},
		{"unchanged", []PeerStats{b, c}, []Peer{want(c), want(b)}, nil},
		{"allowed ips in another order", []PeerStats{b}, []Peer{{PublicKey: kb, Endpoint: ep, AllowedIPs: pfx("100.64.9.0/24", "100.64.1.0/24")}}, nil},
		{"remove one keeps the other", []PeerStats{b, c}, []Peer{want(b)}, []change{{key: kc, remove: true}}},
		{"add one keeps the others", []PeerStats{b, c}, []Peer{want(b), want(c), {PublicKey: kd, AllowedIPs: pfx("100.64.3.0/24")}},
			[]change{{key: kd, replace: true}}},
		{"allowed ips changed", []PeerStats{b}, []Peer{{PublicKey: kb, Endpoint: ep, AllowedIPs: pfx("100.64.1.0/24")}},
			[]change{{key: kb, update: true, replace: true}}},
		{"endpoint changed", []PeerStats{b}, []Peer{{PublicKey: kb, Endpoint: ep2, AllowedIPs: b.AllowedIPs}},
			[]change{{key: kb, update: true, endpoint: true}}},
		{"no desired endpoint keeps the roamed one", []PeerStats{b}, []Peer{{PublicKey: kb, AllowedIPs: b.AllowedIPs}}, nil},
		{"keepalive on", []PeerStats{b}, []Peer{{PublicKey: kb, Endpoint: ep, AllowedIPs: b.AllowedIPs, PersistentKeepalive: 25 * time.Second}},
			[]change{{key: kb, update: true, keepalive: true}}},
		{"psk added", []PeerStats{b}, []Peer{{PublicKey: kb, Endpoint: ep, AllowedIPs: b.AllowedIPs, PresharedKey: &psk}},
			[]change{{key: kb, update: true, psk: true}}},
		{"psk removed", []PeerStats{{PublicKey: kb, Endpoint: ep, AllowedIPs: b.AllowedIPs, psk: psk}}, []Peer{want(b)},
			[]change{{key: kb, update: true, psk: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := diffPeers(tc.have, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.out, summarise(got), cmp.AllowUnexported(change{})); d != "" {
				t.Errorf("diff (-want +got):\n%s", d)
			}
		})
	}
	if _, err := diffPeers(nil, []Peer{want(b), want(b)}); err == nil {
		t.Error("duplicate peer accepted")
	}
	if _, err := diffPeers(nil, []Peer{{PublicKey: kb, AllowedIPs: pfx("100.64.0.0/16")[:0], Endpoint: netip.MustParseAddrPort("1.2.3.4:0")}}); err == nil {
		t.Error("invalid peer accepted")
	}
}

// The UAPI encoder and parser against wireguard-go itself: whatever diff we
// write, reading the device back gives the desired peers.
func TestUAPIAgainstWireguardGo(t *testing.T) {
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer dev.Close()
	priv, _ := GeneratePrivateKey()
	pk := priv.wg()
	if err := dev.IpcSet(encodePrivate(pk)); err != nil {
		t.Fatal(err)
	}
	psk := mustKey(t)
	steps := [][]Peer{
		{{PublicKey: mustKey(t), Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"), AllowedIPs: pfx("100.64.1.0/24"), PersistentKeepalive: 25 * time.Second, PresharedKey: &psk}},
	}
	k2 := mustKey(t)
	steps = append(steps,
		append(steps[0], Peer{PublicKey: k2, Endpoint: netip.MustParseAddrPort("[2001:db8::2]:4000"), AllowedIPs: pfx("100.64.2.0/24", "fd00:1::/64")}),
		[]Peer{{PublicKey: k2, AllowedIPs: pfx("100.64.3.0/24")}},
		nil,
	)
	for i, want := range steps {
		s, _ := dev.IpcGet()
		have, err := parseUAPIGet(s)
		if err != nil {
			t.Fatal(err)
		}
		if have.PublicKey != priv.Public() {
			t.Fatalf("step %d: public key %v, want %v", i, have.PublicKey, priv.Public())
		}
		pcs, err := diffPeers(have.Peers, want)
		if err != nil {
			t.Fatal(err)
		}
		if len(pcs) > 0 {
			if err := dev.IpcSet(encodeUAPIPeers(pcs)); err != nil {
				t.Fatalf("step %d: IpcSet: %v\n%s", i, err, encodeUAPIPeers(pcs))
			}
		}
		s, _ = dev.IpcGet()
		got, err := parseUAPIGet(s)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := diffPeers(got.Peers, want); len(again) != 0 {
			t.Fatalf("step %d: device differs from desired after applying the diff: %d changes left", i, len(again))
		}
		if len(got.Peers) != len(want) {
			t.Fatalf("step %d: %d peers, want %d", i, len(got.Peers), len(want))
		}
	}
}

func encodePrivate(k wgtypes.Key) string {
	return "private_key=" + hexKey(k) + "\n"
}

func TestParseUAPIGetErrors(t *testing.T) {
	for _, in := range []string{
		"listen_port=70000\n",
		"public_key=zz\n",
		"public_key=" + hexKey(mustKey(t)) + "\nallowed_ip=100.64.0.0/40\n",
		"public_key=" + hexKey(mustKey(t)) + "\nrx_bytes=-5\n",
		"public_key=" + hexKey(mustKey(t)) + "\nendpoint=nowhere\n",
		"noequals\n",
		"errno=22\n",
	} {
		if _, err := parseUAPIGet(in); err == nil {
			t.Errorf("parseUAPIGet(%q) accepted", in)
		}
	}
}

func FuzzParseUAPIGet(f *testing.F) {
	k := mustKey(f)
	f.Add("private_key=" + hexKey(k) + "\nlisten_port=51820\npublic_key=" + hexKey(k) +
		"\nendpoint=198.18.0.2:51820\nallowed_ip=100.64.1.0/24\nrx_bytes=5\ntx_bytes=6\nlast_handshake_time_sec=1\n" +
		"last_handshake_time_nsec=2\npersistent_keepalive_interval=25\nerrno=0\n")
	f.Add("public_key=00\n")
	f.Fuzz(func(t *testing.T, s string) {
		st, err := parseUAPIGet(s)
		if err != nil {
			return
		}
		for _, p := range st.Peers {
			for _, a := range p.AllowedIPs {
				if !a.IsValid() {
					t.Fatalf("invalid prefix accepted from %q", s)
				}
			}
			if p.RxBytes < 0 || p.TxBytes < 0 {
				t.Fatalf("negative counter from %q", s)
			}
		}
	})
}
