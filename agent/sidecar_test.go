package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/plan"
)

// Host-mode members and sidecars share one mesh: sidecars lease single
// addresses of the sidecar range by the same rules, every member peers with
// every other (allowed IPs: a host's block, a sidecar's /32), and a sidecar
// that leaves frees its address at once.
func TestSidecarsLeaseAddressesAndPeerWithHosts(t *testing.T) {
	pool := plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/22"), BlockBits: 24, TTL: 10 * time.Minute}
	s := newSim(t, pool)
	s.profile = "local"
	hosts, cars := []string{"h1", "h2", "h3"}, []string{"s1", "s2", "s3"}
	for _, n := range cars {
		s.sidecar[n] = true
	}
	for _, n := range hosts {
		s.start(n, 0, false)
	}
	for _, n := range cars {
		s.start(n, 0, true)
	}
	all := append(append([]string{}, hosts...), cars...)
	sidecarRange := netip.MustParsePrefix("100.127.0.0/16")

	// peered: every agent's last pass has a peer for every other agent, with
	// that agent's block (a /24 in the pool, or a /32 of the sidecar range)
	// as allowed IPs.
	peered := func(names []string) error {
		blocks := s.leases(names)
		for _, n := range names {
			b := blocks[n]
			switch {
			case s.sidecar[n] && (b.Bits() != 32 || !sidecarRange.Contains(b.Addr())):
				return fmt.Errorf("sidecar %s holds %v, want a /32 of %s", n, b, sidecarRange)
			case !s.sidecar[n] && !pool.InPool(b):
				return fmt.Errorf("host %s holds %v", n, b)
			}
		}
		for _, n := range names {
			a := s.all[n]
			a.mu.Lock()
			want := a.last.desired
			a.mu.Unlock()
			var got []netip.Prefix
			for _, p := range want.Peers {
				got = append(got, p.AllowedIPs...)
			}
			for _, o := range names {
				if o != n && !slices.Contains(got, blocks[o]) {
					return fmt.Errorf("%s has no peer for %s's %v (peers: %v, skipped: %v)", n, o, blocks[o], got, want.Skipped)
				}
			}
		}
		return nil
	}
	waitUntil(t, time.Minute, "hosts and sidecars peered", func() error { return peered(all) })

	// s1 leaves: everyone drops it, and its address is nobody's at once
	// (a failed member's would be held for the 10 min TTL).
	gone := s.leases([]string{"s1"})["s1"]
	s.stop("s1")
	rest := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == "s1" })
	waitUntil(t, time.Minute, "s1's address freed", func() error {
		for _, n := range rest {
			a := s.all[n]
			a.mu.Lock()
			_, owned := a.last.leases.Owner(gone)
			a.mu.Unlock()
			if owned {
				return fmt.Errorf("%s still sees %v owned", n, gone)
			}
		}
		return peered(rest)
	})
}

// A member's claim counts only in its own pool: a sidecar announcing a
// host block, or a host announcing a sidecar address, is invalid.
func TestCheckRangesByMode(t *testing.T) {
	a, err := New(Config{NodeName: "self", InsecureGossip: true, Pool: plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/16"), BlockBits: 24, TTL: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	ms := []plan.Member{
		{Name: "host-ok", Tags: plan.Tags{Mode: "tun", Block: netip.MustParsePrefix("100.64.1.0/24")}},
		{Name: "host-bad", Tags: plan.Tags{Mode: "tun", Block: netip.MustParsePrefix("100.127.0.9/32")}},
		{Name: "car-ok", Tags: plan.Tags{Mode: plan.ModeSidecar, Block: netip.MustParsePrefix("100.127.0.9/32")}},
		{Name: "car-bad", Tags: plan.Tags{Mode: plan.ModeSidecar, Block: netip.MustParsePrefix("100.64.2.0/24")}},
		{Name: "car-wide", Tags: plan.Tags{Mode: plan.ModeSidecar, Block: netip.MustParsePrefix("100.127.0.0/24")}},
	}
	got := a.checkRanges(ms)
	for _, m := range got {
		bad := m.TagsErr != nil
		if want := m.Name != "host-ok" && m.Name != "car-ok"; bad != want {
			t.Errorf("%s: invalid=%v (%v), want %v", m.Name, bad, m.TagsErr, want)
		}
	}
	if _, err := New(Config{NodeName: "x", InsecureGossip: true, SidecarRange: netip.MustParsePrefix("100.64.128.0/20")}); err == nil {
		t.Error("a sidecar range inside the cluster range was accepted")
	}
}
