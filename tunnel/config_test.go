package tunnel_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/tunnel"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "198.18.0.1:51820", want: "198.18.0.1:51820"},
		{in: "[2001:db8::1]:51820", want: "[2001:db8::1]:51820"},
		{in: " [::ffff:198.18.0.1]:1 ", want: "198.18.0.1:1"},
		{in: "node-a:51820", err: "want ip:port"},
		{in: "198.18.0.1", err: "want ip:port"},
		{in: "198.18.0.1:0", err: "port 0"},
		{in: "198.18.0.1:70000", err: "want ip:port"},
		{in: "0.0.0.0:51820", err: "not a unicast"},
		{in: "[ff02::1]:51820", err: "not a unicast"},
	} {
		got, err := tunnel.ParseEndpoint(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseEndpoint(%q) = %v, %v; want error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseEndpoint(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseAllowedIPs(t *testing.T) {
	got, err := tunnel.ParseAllowedIPs("100.64.1.0/24, 100.64.2.7/32,,fd00::/64")
	want := []netip.Prefix{
		netip.MustParsePrefix("100.64.1.0/24"),
		netip.MustParsePrefix("100.64.2.7/32"),
		netip.MustParsePrefix("fd00::/64"),
	}
	if err != nil || !cmp.Equal(got, want, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })) {
		t.Fatalf("got %v, %v", got, err)
	}
	for in, msg := range map[string]string{
		"100.64.1.7/24":   "did you mean 100.64.1.0/24",
		"100.64.1.0":      "not a CIDR",
		"100.64.1.0/33":   "not a CIDR",
		"fe80::%eth0/64":  "not a CIDR",
		"100.64.0.0/16,x": "not a CIDR",
	} {
		if _, err := tunnel.ParseAllowedIPs(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseAllowedIPs(%q) = %v, want %q", in, err, msg)
		}
	}
}

func TestParseMTUAndMode(t *testing.T) {
	for in, ok := range map[string]bool{"1420": true, "1280": true, "9000": true, "1279": false, "9001": false, "-1": false, "x": false, "": false} {
		if _, err := tunnel.ParseMTU(in); (err == nil) != ok {
			t.Errorf("ParseMTU(%q) err = %v", in, err)
		}
	}
	for in, want := range map[string]tunnel.Mode{"": tunnel.ModeAuto, "AUTO": tunnel.ModeAuto, "tun": tunnel.ModeTUN, "kernel": tunnel.ModeKernel, "netstack": tunnel.ModeNetstack} {
		if got, err := tunnel.ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := tunnel.ParseMode("wireguard"); err == nil {
		t.Error("ParseMode accepted an unknown mode")
	}
}

func TestPeerValidate(t *testing.T) {
	k, _ := tunnel.GeneratePrivateKey()
	good := tunnel.Peer{PublicKey: k.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/24")}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*tunnel.Peer){
		"no key":          func(p *tunnel.Peer) { p.PublicKey = tunnel.Key{} },
		"host bits":       func(p *tunnel.Peer) { p.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("100.64.0.1/24")} },
		"port 0":          func(p *tunnel.Peer) { p.Endpoint = netip.MustParseAddrPort("198.18.0.1:0") },
		"keepalive frac":  func(p *tunnel.Peer) { p.PersistentKeepalive = 1500 * time.Millisecond },
		"keepalive large": func(p *tunnel.Peer) { p.PersistentKeepalive = 70000 * time.Second },
	} {
		p := good
		mutate(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	k, _ := tunnel.GeneratePrivateKey()
	for name, cfg := range map[string]tunnel.Config{
		"no key":       {Name: "wfx0", Mode: tunnel.ModeNetstack, Address: netip.MustParsePrefix("100.64.0.1/32")},
		"long name":    {Name: "a-very-long-interface", PrivateKey: k, Mode: tunnel.ModeNetstack},
		"slash name":   {Name: "a/b", PrivateKey: k, Mode: tunnel.ModeNetstack},
		"small mtu":    {Name: "wfx0", PrivateKey: k, MTU: 576, Mode: tunnel.ModeNetstack},
		"bad port":     {Name: "wfx0", PrivateKey: k, ListenPort: 70000, Mode: tunnel.ModeNetstack},
		"no address":   {Name: "wfx0", PrivateKey: k, Mode: tunnel.ModeNetstack},
		"unknown mode": {Name: "wfx0", PrivateKey: k, Mode: "carrier-pigeon"},
	} {
		if d, err := tunnel.Open(t.Context(), cfg); err == nil {
			d.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

func TestParsePeerSpec(t *testing.T) {
	k, _ := tunnel.GeneratePrivateKey()
	pub := k.Public().String()
	p, err := tunnel.ParsePeerSpec(pub + ",198.18.0.2:51820,100.64.0.2/32,100.64.1.0/24")
	if err != nil || p.PublicKey != k.Public() || p.Endpoint.String() != "198.18.0.2:51820" || len(p.AllowedIPs) != 2 {
		t.Fatalf("got %+v, %v", p, err)
	}
	if p, err := tunnel.ParsePeerSpec(pub + ",,100.64.0.2/32"); err != nil || p.Endpoint.IsValid() {
		t.Fatalf("roaming peer: %+v, %v", p, err)
	}
	for _, bad := range []string{"", pub, pub + ",198.18.0.2:51820", pub + ",x,100.64.0.2/32", "nokey,,100.64.0.0/24", pub + ",,", pub + ",,100.64.0.1/24"} {
		if _, err := tunnel.ParsePeerSpec(bad); err == nil {
			t.Errorf("ParsePeerSpec(%q) accepted", bad)
		}
	}
}
