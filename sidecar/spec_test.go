package sidecar

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseExpose(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Ports
		err  string
	}{
		{in: "", want: Ports{}},
		{in: "8080", want: Ports{TCP: []uint16{8080}}},
		{in: "9090/tcp, 8080,53/udp,53/UDP,8080", want: Ports{TCP: []uint16{8080, 9090}, UDP: []uint16{53}}},
		{in: "0", err: "want 1-65535"},
		{in: "65536", err: "want 1-65535"},
		{in: "80/sctp", err: `protocol "sctp"`},
		{in: "http", err: "want 1-65535"},
		{in: strings.Repeat("1,", 300), err: "at most 256"},
	} {
		got, err := ParseExpose(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseExpose(%.20q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseExpose(%q): %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("ParseExpose(%q) (-want +got):\n%s", tc.in, d)
		}
	}
}

func TestParseForwards(t *testing.T) {
	lo := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p) }
	for _, tc := range []struct {
		in   string
		want []Forward
		err  string
	}{
		{in: "5432=db.weft:5432", want: []Forward{{Network: "tcp", Local: lo(5432), Target: "db.weft:5432"}}},
		{in: "127.0.0.2:6380=100.64.3.7:6379, 53=dns.weft:53/udp", want: []Forward{
			{Network: "tcp", Local: netip.MustParseAddrPort("127.0.0.2:6380"), Target: "100.64.3.7:6379"},
			{Network: "udp", Local: lo(53), Target: "dns.weft:53"},
		}},
		{in: "8080=[fd00::1]:80", want: []Forward{{Network: "tcp", Local: lo(8080), Target: "[fd00::1]:80"}}},
		{in: "5432", err: "want LOCAL=TARGET"},
		{in: "x=db:1", err: "local side"},
		{in: "1=db", err: "want host:port"},
		{in: "1=:5", err: "want host:port"},
		{in: "1=db:0", err: "want 1-65535"},
		{in: "1=d b:5", err: "want host:port"},
		{in: "1=db:5/icmp", err: "protocol"},
		{in: "1=a:5,1=b:6", err: "forwarded twice"},
		{in: "1=a:5,1=b:6/udp", want: []Forward{{Network: "tcp", Local: lo(1), Target: "a:5"}, {Network: "udp", Local: lo(1), Target: "b:6"}}},
	} {
		got, err := ParseForwards(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseForwards(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseForwards(%q): %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); d != "" {
			t.Errorf("ParseForwards(%q) (-want +got):\n%s", tc.in, d)
		}
	}
}

func TestParseAnnotations(t *testing.T) {
	in := "kubernetes.io/config.seen=\"2026-11-28T10:00:00Z\"\nweft.dev/expose=\"8080,53/udp\"\n\nweft.dev/forward=\"5432=db.weft:5432\\n6379=cache.weft:6379\"\n"
	got, err := ParseAnnotations([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"kubernetes.io/config.seen": "2026-11-28T10:00:00Z",
		AnnotationExpose:            "8080,53/udp",
		AnnotationForward:           "5432=db.weft:5432\n6379=cache.weft:6379",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	fw, err := ParseForwards(got[AnnotationForward])
	if err != nil || len(fw) != 2 {
		t.Errorf("forwards from a multi-line annotation: %v, %v", fw, err)
	}
	for _, bad := range []string{"novalue\n", "k=unquoted\n", "=\"v\"\n", "k=\"open\n"} {
		if _, err := ParseAnnotations([]byte(bad)); err == nil {
			t.Errorf("ParseAnnotations(%q) accepted bad input", bad)
		}
	}
}

func FuzzParseSpecs(f *testing.F) {
	for _, s := range []string{"8080,53/udp", "5432=db.weft:5432", "127.0.0.1:1=[::1]:2/udp", "k=\"v\"\n", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := ParseExpose(s); err == nil {
			for _, port := range append(p.TCP, p.UDP...) {
				if port == 0 {
					t.Fatalf("ParseExpose(%q) gave port 0", s)
				}
			}
		}
		if fw, err := ParseForwards(s); err == nil {
			for _, f := range fw {
				if !f.Local.IsValid() || f.Local.Port() == 0 || f.Target == "" {
					t.Fatalf("ParseForwards(%q) gave %+v", s, f)
				}
			}
		}
		ParseAnnotations([]byte(s))
	})
}
