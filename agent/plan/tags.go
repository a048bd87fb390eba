package plan

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/weftnet/weft/tunnel/wgspec"
)

// The tag keys, as a member announces them to the others. They are short
// because Serf caps all tags of a member together at MaxTagsSize bytes.
const (
	tagVersion   = "v"
	tagPublicKey = "pk"
	tagEndpoint  = "ep"
	tagBlock     = "blk"
	tagLeaseTime = "lt"
	tagMode      = "m"
	tagMTU       = "mtu"
)

// ModeSidecar is the mode a sidecar announces in its tags; host-mode
// members announce their tunnel backend (kernel, tun or netstack).
const ModeSidecar = "sidecar"

// MaxTagsSize is Serf's limit on a member's encoded tags
// (memberlist.MetaMaxSize): SetTags fails beyond it.
const MaxTagsSize = 512

// ErrUnknownTagVersion is returned (wrapped) for tags whose "v" is missing
// or is not TagVersion: such a member speaks a schema this agent cannot read.
var ErrUnknownTagVersion = errors.New("unknown tag version")

// ErrTagsTooLarge is returned (wrapped) for tags that Serf would refuse
// because they encode to more than MaxTagsSize bytes.
var ErrTagsTooLarge = errors.New("tags too large")

// Encode returns t as Serf tags. It refuses tags that DecodeTags would
// refuse or decode to something else, so what a member announces is always
// what the others read.
func (t Tags) Encode() (map[string]string, error) {
	if t.Version != TagVersion {
		return nil, fmt.Errorf("tag %s: version %d, this agent writes %d: %w", tagVersion, t.Version, TagVersion, ErrUnknownTagVersion)
	}
	if t.PublicKey == (wgspec.Key{}) {
		return nil, fmt.Errorf("tag %s: public key is unset", tagPublicKey)
	}
	if !t.Endpoint.IsValid() {
		return nil, fmt.Errorf("tag %s: endpoint is unset", tagEndpoint)
	}
	ep, err := wgspec.ParseEndpoint(t.Endpoint.String())
	if err != nil {
		return nil, fmt.Errorf("tag %s: %w", tagEndpoint, err)
	}
	if ep != t.Endpoint {
		// A zone or an IPv4-mapped address would not survive the trip.
		return nil, fmt.Errorf("tag %s: endpoint %s is not canonical, want %s", tagEndpoint, t.Endpoint, ep)
	}
	if err := validateMode(t.Mode); err != nil {
		return nil, err
	}
	if err := wgspec.ValidateMTU(t.MTU); err != nil {
		return nil, fmt.Errorf("tag %s: %w", tagMTU, err)
	}
	m := map[string]string{
		tagVersion:   strconv.Itoa(t.Version),
		tagPublicKey: t.PublicKey.String(),
		tagEndpoint:  t.Endpoint.String(),
		tagMode:      t.Mode,
		tagMTU:       strconv.Itoa(t.MTU),
	}
	switch {
	case t.Block.IsValid():
		if t.Block != t.Block.Masked() {
			return nil, fmt.Errorf("tag %s: block %s is not a network address, want %s", tagBlock, t.Block, t.Block.Masked())
		}
		if t.LeaseTime < 0 {
			return nil, fmt.Errorf("tag %s: lease time %d is negative", tagLeaseTime, t.LeaseTime)
		}
		m[tagBlock] = t.Block.String()
		m[tagLeaseTime] = strconv.FormatInt(t.LeaseTime, 10)
	case t.Block != netip.Prefix{}:
		return nil, fmt.Errorf("tag %s: block %s is not a valid prefix", tagBlock, t.Block)
	case t.LeaseTime != 0:
		return nil, fmt.Errorf("tag %s: lease time %d without a block", tagLeaseTime, t.LeaseTime)
	}
	if n := TagsSize(m); n > MaxTagsSize {
		return nil, fmt.Errorf("tags: %d bytes encoded, Serf allows %d: %w", n, MaxTagsSize, ErrTagsTooLarge)
	}
	return m, nil
}

// DecodeTags reads and validates the tags of a member. Keys it does not know
// are ignored, so a newer agent can add tags without breaking older ones,
// but they count toward the size limit.
func DecodeTags(m map[string]string) (Tags, error) {
	if n := TagsSize(m); n > MaxTagsSize {
		return Tags{}, fmt.Errorf("tags: %d bytes encoded, Serf allows %d: %w", n, MaxTagsSize, ErrTagsTooLarge)
	}
	v, ok := m[tagVersion]
	if !ok {
		return Tags{}, fmt.Errorf("tag %s: missing: %w", tagVersion, ErrUnknownTagVersion)
	}
	if v != strconv.Itoa(TagVersion) {
		return Tags{}, fmt.Errorf("tag %s: %q, this agent reads %d: %w", tagVersion, v, TagVersion, ErrUnknownTagVersion)
	}
	t := Tags{Version: TagVersion}

	s, err := requiredTag(m, tagPublicKey)
	if err != nil {
		return Tags{}, err
	}
	if t.PublicKey, err = wgspec.ParseKey(s); err != nil {
		return Tags{}, fmt.Errorf("tag %s: %w", tagPublicKey, err)
	}
	if t.PublicKey == (wgspec.Key{}) {
		// The all-zero key is nobody's: WireGuard cannot handshake with it.
		return Tags{}, fmt.Errorf("tag %s: all-zero public key", tagPublicKey)
	}

	if s, err = requiredTag(m, tagEndpoint); err != nil {
		return Tags{}, err
	}
	if t.Endpoint, err = wgspec.ParseEndpoint(s); err != nil {
		return Tags{}, fmt.Errorf("tag %s: %w", tagEndpoint, err)
	}

	if t.Mode, err = requiredTag(m, tagMode); err != nil {
		return Tags{}, err
	}
	if err := validateMode(t.Mode); err != nil {
		return Tags{}, err
	}

	if s, err = requiredTag(m, tagMTU); err != nil {
		return Tags{}, err
	}
	mtu, err := parseDecimal(tagMTU, s)
	if err != nil {
		return Tags{}, err
	}
	if mtu < wgspec.MinMTU || mtu > wgspec.MaxMTU {
		return Tags{}, fmt.Errorf("tag %s: mtu %d out of range %d-%d", tagMTU, mtu, wgspec.MinMTU, wgspec.MaxMTU)
	}
	t.MTU = int(mtu)

	blk, hasBlock := m[tagBlock]
	lt, hasTime := m[tagLeaseTime]
	switch {
	case hasBlock && !hasTime:
		// Without a claim time the claim could not be ordered against others.
		return Tags{}, fmt.Errorf("tag %s: missing, but %s is %q", tagLeaseTime, tagBlock, blk)
	case hasTime && !hasBlock:
		return Tags{}, fmt.Errorf("tag %s: %q without a %s", tagLeaseTime, lt, tagBlock)
	case hasBlock:
		if t.Block, err = netip.ParsePrefix(blk); err != nil {
			return Tags{}, fmt.Errorf("tag %s: %q is not a CIDR", tagBlock, blk)
		}
		if t.Block != t.Block.Masked() {
			return Tags{}, fmt.Errorf("tag %s: %s is not a network address, want %s", tagBlock, t.Block, t.Block.Masked())
		}
		if t.LeaseTime, err = parseDecimal(tagLeaseTime, lt); err != nil {
			return Tags{}, err
		}
		if t.LeaseTime < 0 {
			return Tags{}, fmt.Errorf("tag %s: lease time %d is negative", tagLeaseTime, t.LeaseTime)
		}
	}
	return t, nil
}

// TagsSize is the number of bytes Serf's encodeTags makes of m: one magic
// byte and a msgpack map of strings. Serf's go-msgpack handle writes strings
// in the legacy raw format (fixstr below 32 bytes, else str16 or str32, never
// str8), so this is exact, not an estimate.
func TagsSize(m map[string]string) int {
	n := 1 + msgpackHeader(len(m), 16)
	for k, v := range m {
		n += msgpackHeader(len(k), 32) + len(k) + msgpackHeader(len(v), 32) + len(v)
	}
	return n
}

// msgpackHeader is the size of a msgpack map or raw-string header for a
// container of n entries whose "fix" form holds fewer than fix.
func msgpackHeader(n, fix int) int {
	switch {
	case n < fix:
		return 1
	case n < 1<<16:
		return 3
	default:
		return 5
	}
}

func requiredTag(m map[string]string, key string) (string, error) {
	s, ok := m[key]
	if !ok {
		return "", fmt.Errorf("tag %s: missing", key)
	}
	return s, nil
}

// parseDecimal accepts only the canonical decimal form (no sign, spaces or
// leading zeros), so every member reads a tag the same way and a decoded
// value re-encodes to the same text.
func parseDecimal(key, s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || strconv.FormatInt(n, 10) != s {
		return 0, fmt.Errorf("tag %s: %q is not a decimal integer", key, s)
	}
	return n, nil
}

func validateMode(m string) error {
	switch m {
	case string(wgspec.ModeKernel), string(wgspec.ModeTUN), string(wgspec.ModeNetstack), ModeSidecar:
		return nil
	}
	return fmt.Errorf("tag %s: mode %q, want kernel, tun, netstack or sidecar", tagMode, m)
}
