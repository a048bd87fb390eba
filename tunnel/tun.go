package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/tun"
)

// openTUN runs wireguard-go on a kernel TUN device. tun.CreateTUN opens it
// with IFF_VNET_HDR and turns on TSO/USO, and conn.NewDefaultBind uses UDP
// GSO/GRO: opening the TUN any other way would lose those offloads.
func openTUN(_ context.Context, cfg Config) (Device, error) {
	tdev, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: create TUN: %w", cfg.Name, err)
	}
	u, err := startUserspace(cfg, ModeTUN, tdev)
	if err != nil {
		return nil, err
	}
	if err := configureLink(cfg); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

// configureLink gives the link its overlay address and brings it up.
func configureLink(cfg Config) error {
	link, err := netlink.LinkByName(cfg.Name)
	if err != nil {
		return fmt.Errorf("tunnel %s: find link: %w", cfg.Name, err)
	}
	if cfg.Address.IsValid() {
		addr := &netlink.Addr{IPNet: prefixIPNet(cfg.Address)}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("tunnel %s: add address %s: %w", cfg.Name, cfg.Address, err)
		}
	}
	if link.Attrs().MTU != cfg.MTU {
		if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("tunnel %s: set mtu %d: %w", cfg.Name, cfg.MTU, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("tunnel %s: set up: %w", cfg.Name, err)
	}
	return nil
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
