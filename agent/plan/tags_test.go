package plan

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/tunnel/wgspec"
)

// netipComparers lets cmp compare the net/netip types, whose fields are unexported.
var netipComparers = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

// fakeKey is a deterministic public key whose bytes start with b.
func fakeKey(b byte) wgspec.Key {
	var k wgspec.Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func sampleHostTags() Tags {
	return Tags{
		Version:   TagVersion,
		PublicKey: fakeKey(1),
		Endpoint:  netip.MustParseAddrPort("198.18.0.1:51820"),
		Block:     netip.MustParsePrefix("100.64.3.0/24"),
		LeaseTime: 1767225600123,
		Mode:      "kernel",
		MTU:       1420,
	}
}

func TestTagsEncodeWireForm(t *testing.T) {
	got, err := sampleHostTags().Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"v":   "1",
		"pk":  fakeKey(1).String(),
		"ep":  "198.18.0.1:51820",
		"blk": "100.64.3.0/24",
		"lt":  "1767225600123",
		"m":   "kernel",
		"mtu": "1420",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Encode() wire form (-want +got):\n%s", diff)
	}
}

func TestTagsRoundTrip(t *testing.T) {
	noBlock := sampleHostTags()
	noBlock.Block, noBlock.LeaseTime = netip.Prefix{}, 0
	sidecar := sampleHostTags()
	sidecar.Mode, sidecar.Block, sidecar.MTU = ModeSidecar, netip.MustParsePrefix("100.127.0.9/32"), 1280
	v6 := sampleHostTags()
	v6.Endpoint = netip.MustParseAddrPort("[2001:db8::1]:1")
	v6.Block, v6.Mode, v6.MTU = netip.MustParsePrefix("fd00:64:0:3::/64"), "netstack", 9000
	zeroTime := sampleHostTags()
	zeroTime.LeaseTime = 0
	for name, tags := range map[string]Tags{"host": sampleHostTags(), "no block": noBlock, "sidecar": sidecar, "ipv6": v6, "lease time 0": zeroTime} {
		t.Run(name, func(t *testing.T) {
			m, err := tags.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if _, ok := m["blk"]; ok != tags.Block.IsValid() {
				t.Errorf("blk present = %v, want %v", ok, tags.Block.IsValid())
			}
			if _, ok := m["lt"]; ok != tags.Block.IsValid() {
				t.Errorf("lt present = %v, want %v", ok, tags.Block.IsValid())
			}
			got, err := DecodeTags(m)
			if err != nil {
				t.Fatalf("DecodeTags(%v): %v", m, err)
			}
			if diff := cmp.Diff(tags, got, netipComparers); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTagsEncodeRefuses(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Tags)
		want   string // substring of the error
		is     error
	}{
		{"version 0", func(t *Tags) { t.Version = 0 }, "tag v:", ErrUnknownTagVersion},
		{"version 2", func(t *Tags) { t.Version = 2 }, "tag v:", ErrUnknownTagVersion},
		{"no key", func(t *Tags) { t.PublicKey = wgspec.Key{} }, "tag pk:", nil},
		{"no endpoint", func(t *Tags) { t.Endpoint = netip.AddrPort{} }, "tag ep: endpoint is unset", nil},
		{"port 0", func(t *Tags) { t.Endpoint = netip.MustParseAddrPort("198.18.0.1:0") }, "tag ep:", nil},
		{"zone", func(t *Tags) { t.Endpoint = netip.MustParseAddrPort("[fe80::1%eth0]:51820") }, "not canonical", nil},
		{"mapped v4", func(t *Tags) { t.Endpoint = netip.MustParseAddrPort("[::ffff:198.18.0.1]:51820") }, "not canonical", nil},
		{"unmasked block", func(t *Tags) { t.Block = netip.MustParsePrefix("100.64.3.7/24") }, "tag blk:", nil},
		{"invalid block", func(t *Tags) { t.Block = netip.PrefixFrom(netip.MustParseAddr("100.64.3.0"), 40) }, "tag blk:", nil},
		{"negative lt", func(t *Tags) { t.LeaseTime = -1 }, "tag lt:", nil},
		{"lt without block", func(t *Tags) { t.Block = netip.Prefix{} }, "tag lt:", nil},
		{"bad mode", func(t *Tags) { t.Mode = "wireguard" }, "tag m:", nil},
		{"empty mode", func(t *Tags) { t.Mode = "" }, "tag m:", nil},
		{"mtu low", func(t *Tags) { t.MTU = wgspec.MinMTU - 1 }, "tag mtu:", nil},
		{"mtu high", func(t *Tags) { t.MTU = wgspec.MaxMTU + 1 }, "tag mtu:", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tags := sampleHostTags()
			tt.change(&tags)
			m, err := tags.Encode()
			if err == nil {
				t.Fatalf("Encode() = %v, want error", m)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
		})
	}
}

func TestDecodeTagsRefuses(t *testing.T) {
	tests := []struct {
		name   string
		change func(map[string]string)
		want   string
		is     error
	}{
		{"no v", func(m map[string]string) { delete(m, "v") }, "tag v: missing", ErrUnknownTagVersion},
		{"v 2", func(m map[string]string) { m["v"] = "2" }, "tag v:", ErrUnknownTagVersion},
		{"v not canonical", func(m map[string]string) { m["v"] = "01" }, "tag v:", ErrUnknownTagVersion},
		{"no pk", func(m map[string]string) { delete(m, "pk") }, "tag pk: missing", nil},
		{"pk not base64", func(m map[string]string) { m["pk"] = "not a key" }, "tag pk:", wgspec.ErrBadKey},
		{"pk short", func(m map[string]string) { m["pk"] = "AAAA" }, "tag pk:", wgspec.ErrBadKey},
		{"pk zero", func(m map[string]string) { m["pk"] = wgspec.Key{}.String() }, "tag pk: all-zero", nil},
		{"no ep", func(m map[string]string) { delete(m, "ep") }, "tag ep: missing", nil},
		{"ep host name", func(m map[string]string) { m["ep"] = "node1:51820" }, "tag ep:", nil},
		{"ep port 0", func(m map[string]string) { m["ep"] = "198.18.0.1:0" }, "tag ep:", nil},
		{"ep multicast", func(m map[string]string) { m["ep"] = "224.0.0.1:51820" }, "tag ep:", nil},
		{"blk not cidr", func(m map[string]string) { m["blk"] = "100.64.3.0" }, "tag blk:", nil},
		{"blk not masked", func(m map[string]string) { m["blk"] = "100.64.3.1/24" }, "tag blk: 100.64.3.1/24 is not a network address", nil},
		{"blk without lt", func(m map[string]string) { delete(m, "lt") }, "tag lt: missing", nil},
		{"lt without blk", func(m map[string]string) { delete(m, "blk") }, "tag lt:", nil},
		{"lt negative", func(m map[string]string) { m["lt"] = "-5" }, "tag lt: lease time -5 is negative", nil},
		{"lt plus sign", func(m map[string]string) { m["lt"] = "+5" }, "tag lt:", nil},
		{"lt not a number", func(m map[string]string) { m["lt"] = "yesterday" }, "tag lt:", nil},
		{"lt overflow", func(m map[string]string) { m["lt"] = "99999999999999999999" }, "tag lt:", nil},
		{"no m", func(m map[string]string) { delete(m, "m") }, "tag m: missing", nil},
		{"m unknown", func(m map[string]string) { m["m"] = "KERNEL" }, "tag m:", nil},
		{"no mtu", func(m map[string]string) { delete(m, "mtu") }, "tag mtu: missing", nil},
		{"mtu low", func(m map[string]string) { m["mtu"] = "1279" }, "tag mtu: mtu 1279 out of range", nil},
		{"mtu high", func(m map[string]string) { m["mtu"] = "9001" }, "tag mtu:", nil},
		{"mtu leading zero", func(m map[string]string) { m["mtu"] = "01420" }, "tag mtu:", nil},
		{"too large", func(m map[string]string) { m["x"] = strings.Repeat("a", 400) }, "Serf allows 512", ErrTagsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := sampleHostTags().Encode()
			if err != nil {
				t.Fatal(err)
			}
			tt.change(m)
			got, err := DecodeTags(m)
			if err == nil {
				t.Fatalf("DecodeTags(%v) = %+v, want error", m, got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
		})
	}
}

// TestDecodeTagsUnknownKeys checks forward compatibility: a newer agent's
// extra tags are ignored, but they count toward Serf's limit.
func TestDecodeTagsUnknownKeys(t *testing.T) {
	m, err := sampleHostTags().Encode()
	if err != nil {
		t.Fatal(err)
	}
	m["zone"] = "eu-west-1a"
	got, err := DecodeTags(m)
	if err != nil {
		t.Fatalf("extra key refused: %v", err)
	}
	if diff := cmp.Diff(sampleHostTags(), got, netipComparers); diff != "" {
		t.Errorf("extra key changed the tags (-want +got):\n%s", diff)
	}

	// Fill up to exactly the limit with one extra tag, then one byte more.
	delete(m, "zone")
	// "x" costs 2 bytes, the value a 3-byte str16 header and its length.
	room := MaxTagsSize - TagsSize(m) - 2 - 3
	m["x"] = strings.Repeat("a", room)
	if n := TagsSize(m); n != MaxTagsSize {
		t.Fatalf("test setup: size %d, want %d", n, MaxTagsSize)
	}
	if _, err := DecodeTags(m); err != nil {
		t.Errorf("tags of exactly %d bytes refused: %v", MaxTagsSize, err)
	}
	m["x"] += "a"
	if _, err := DecodeTags(m); !errors.Is(err, ErrTagsTooLarge) {
		t.Errorf("tags of %d bytes: err = %v, want ErrTagsTooLarge", TagsSize(m), err)
	}
}

// TestTagsSize pins the size model to msgpack's header boundaries; the
// values were checked against Serf's own encoder (go-msgpack v2,
// MsgpackHandle), which is what SetTags measures.
func TestTagsSize(t *testing.T) {
	tests := []struct {
		m    map[string]string
		want int
	}{
		{map[string]string{}, 2},
		{map[string]string{"v": "1"}, 1 + 1 + 2 + 2},
		{map[string]string{"k": strings.Repeat("a", 31)}, 1 + 1 + 2 + 1 + 31},
		{map[string]string{"k": strings.Repeat("a", 32)}, 1 + 1 + 2 + 3 + 32}, // str16, msgpack's legacy raw has no str8
		{map[string]string{"k": strings.Repeat("a", 1<<16)}, 1 + 1 + 2 + 5 + 1<<16},
	}
	for _, tt := range tests {
		if got := TagsSize(tt.m); got != tt.want {
			t.Errorf("TagsSize(%d keys, %d-byte value) = %d, want %d", len(tt.m), len(tt.m["k"]), got, tt.want)
		}
	}
	many := map[string]string{}
	for i := 0; i < 16; i++ {
		many[string(rune('a'+i))] = ""
	}
	if got, want := TagsSize(many), 1+3+16*3; got != want { // map16 from 16 entries
		t.Errorf("TagsSize(16 keys) = %d, want %d", got, want)
	}
	// The largest tags this agent writes leave room for a few more keys.
	big := Tags{
		Version:   TagVersion,
		PublicKey: fakeKey(9),
		Endpoint:  netip.MustParseAddrPort("[2001:db8:1234:5678:9abc:def0:1234:5678]:65535"),
		Block:     netip.MustParsePrefix("2001:db8:1234:5678:9abc:def0:1234:5600/120"),
		LeaseTime: 1<<63 - 1,
		Mode:      "netstack",
		MTU:       9000,
	}
	m, err := big.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if n := TagsSize(m); n > MaxTagsSize/2 {
		t.Errorf("largest tags encode to %d bytes, more than half of Serf's %d", n, MaxTagsSize)
	}
}

func FuzzDecodeTags(f *testing.F) {
	good, err := sampleHostTags().Encode()
	if err != nil {
		f.Fatal(err)
	}
	all := uint8(0xff)
	f.Add(all, good["v"], good["pk"], good["ep"], good["blk"], good["lt"], good["m"], good["mtu"], "")
	f.Add(all&^(1<<3|1<<4), "1", good["pk"], "[2001:db8::1]:7946", "", "", "sidecar", "1280", "zone=a")
	f.Add(all, "1", " "+good["pk"]+"\n", " 198.18.0.1:1 ", "100.127.0.9/32", "0", "tun", "9000", "x=")
	f.Add(all, "1", good["pk"], "[::ffff:198.18.0.1]:51820", "::ffff:100.64.0.0/120", "7", "netstack", "1500", "")
	f.Add(all, "2", "", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, present uint8, v, pk, ep, blk, lt, mode, mtu, extra string) {
		m := map[string]string{}
		for i, kv := range [][2]string{{"v", v}, {"pk", pk}, {"ep", ep}, {"blk", blk}, {"lt", lt}, {"m", mode}, {"mtu", mtu}} {
			if present&(1<<i) != 0 {
				m[kv[0]] = kv[1]
			}
		}
		if k, val, ok := strings.Cut(extra, "="); ok && present&0x80 != 0 {
			m[k] = val
		}
		tags, err := DecodeTags(m)
		if err != nil {
			return
		}
		again, err := tags.Encode()
		if err != nil {
			t.Fatalf("DecodeTags(%q) = %+v, which does not encode: %v", m, tags, err)
		}
		back, err := DecodeTags(again)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", again, err)
		}
		if diff := cmp.Diff(tags, back, netipComparers); diff != "" {
			t.Fatalf("round trip of %q changed the tags (-first +second):\n%s", m, diff)
		}
		if TagsSize(again) > MaxTagsSize {
			t.Fatalf("re-encoded %q is %d bytes", again, TagsSize(again))
		}
	})
}
