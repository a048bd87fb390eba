package agent

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProto marks the routes weft installs, so it changes only its own and
// finds them again after a restart (`ip route show proto 0x77`... a number in
// the range the kernel leaves to routing daemons).
const routeProto = netlink.RouteProtocol(0x77)

// hostRoutes keeps the kernel side of host mode in line: the node address on
// the WireGuard link and one route per peer block through it.
type hostRoutes struct {
	link string
}

// setAddress makes addr/32 the only weft address on the link.
func (h *hostRoutes) setAddress(addr netip.Addr) error {
	l, err := netlink.LinkByName(h.link)
	if err != nil {
		return fmt.Errorf("routes: link %s: %w", h.link, err)
	}
	want := netip.PrefixFrom(addr, addr.BitLen())
	have, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("routes: list addresses of %s: %w", h.link, err)
	}
	found := false
	for _, a := range have {
		p, ok := ipNetPrefix(a.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if p == want {
			found = true
			continue
		}
		if err := netlink.AddrDel(l, &a); err != nil {
			return fmt.Errorf("routes: remove old address %s from %s: %w", p, h.link, err)
		}
	}
	if !found {
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(want)}); err != nil {
			return fmt.Errorf("routes: add %s to %s: %w", want, h.link, err)
		}
	}
	return netlink.LinkSetUp(l)
}

// setRoutes makes the weft routes through the link exactly blocks, each with
// src = the node address so traffic the node itself sends carries its
// overlay address. Routes that are already right are not touched.
func (h *hostRoutes) setRoutes(blocks []netip.Prefix, src netip.Addr) error {
	l, err := netlink.LinkByName(h.link)
	if err != nil {
		return fmt.Errorf("routes: link %s: %w", h.link, err)
	}
	have, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: l.Attrs().Index, Protocol: routeProto},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("routes: list routes of %s: %w", h.link, err)
	}
	want := map[netip.Prefix]bool{}
	for _, b := range blocks {
		want[b] = true
	}
	for _, r := range have {
		p, ok := ipNetPrefix(r.Dst)
		srcOK := src.IsValid() && r.Src != nil && r.Src.Equal(net.IP(src.AsSlice()))
		if ok && want[p] && srcOK {
			delete(want, p)
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			return fmt.Errorf("routes: delete %v: %w", r.Dst, err)
		}
	}
	for p := range want {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixNet(p), Protocol: routeProto, Scope: unix.RT_SCOPE_LINK}
		if src.IsValid() && src.Is4() == p.Addr().Is4() {
			r.Src = net.IP(src.AsSlice())
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("routes: add %s via %s: %w", p, h.link, err)
		}
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}
