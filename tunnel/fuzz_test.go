package tunnel_test

import (
	"strings"
	"testing"

	"github.com/weftnet/weft/tunnel"
)

func FuzzParseKey(f *testing.F) {
	f.Add("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=")
	f.Add("")
	f.Add("====")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := tunnel.ParseKey(s)
		if err != nil {
			return
		}
		again, err := tunnel.ParseKey(k.String())
		if err != nil || again != k {
			t.Fatalf("key %q does not round-trip: %v", s, err)
		}
	})
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"198.18.0.1:51820", "[2001:db8::1]:1", "x:1", "[::1%eth0]:5", "1.2.3.4:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := tunnel.ParseEndpoint(s)
		if err != nil {
			return
		}
		if ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().Zone() != "" {
			t.Fatalf("ParseEndpoint(%q) = %v", s, ap)
		}
		if again, err := tunnel.ParseEndpoint(ap.String()); err != nil || again != ap {
			t.Fatalf("%q does not round-trip: %v %v", s, again, err)
		}
	})
}

func FuzzParseAllowedIPs(f *testing.F) {
	for _, s := range []string{"100.64.0.0/24", "100.64.0.0/24,fd00::/8", " , ", "1.2.3.4/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := tunnel.ParseAllowedIPs(s)
		if err != nil {
			return
		}
		var strs []string
		for _, p := range ps {
			if p != p.Masked() {
				t.Fatalf("%q gave unmasked %v", s, p)
			}
			strs = append(strs, p.String())
		}
		again, err := tunnel.ParseAllowedIPs(strings.Join(strs, ","))
		if err != nil || len(again) != len(ps) {
			t.Fatalf("%q does not round-trip: %v", s, err)
		}
	})
}

func FuzzParseMTU(f *testing.F) {
	f.Add("1420")
	f.Add("-1")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := tunnel.ParseMTU(s)
		if err == nil && (n < tunnel.MinMTU || n > tunnel.MaxMTU) {
			t.Fatalf("ParseMTU(%q) = %d", s, n)
		}
	})
}

func FuzzParsePeerSpec(f *testing.F) {
	f.Add("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=,198.18.0.2:51820,100.64.0.2/32")
	f.Add("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=,,100.64.0.0/24,fd00::/64")
	f.Add(",,")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := tunnel.ParsePeerSpec(s)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil || len(p.AllowedIPs) == 0 {
			t.Fatalf("ParsePeerSpec(%q) accepted an invalid peer: %v", s, err)
		}
	})
}
