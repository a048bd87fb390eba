package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// openTUN runs wireguard-go on a kernel TUN device (createTUN).
func openTUN(_ context.Context, cfg Config) (Device, error) {
	existing, err := netlink.LinkByName(cfg.Name)
	if err == nil && existing.Type() != "tuntap" {
		return nil, fmt.Errorf("tunnel %s: a %s link of that name exists", cfg.Name, existing.Type())
	}
	tdev, err := createTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: create TUN: %w", cfg.Name, err)
	}
	if existing != nil {
		cfg.Logger.Info("adopted the existing TUN device", "dev", cfg.Name, "ifindex", existing.Attrs().Index)
	}
	var unpersist func()
	if cfg.Persist {
		if err := setPersist(tdev, true); err != nil {
			tdev.Close()
			return nil, fmt.Errorf("tunnel %s: %w", cfg.Name, err)
		}
		unpersist = func() { setPersist(tdev, false) }
	} else if existing != nil {
		// Adopted a persistent device but asked not to persist: let it go
		// with this process.
		setPersist(tdev, false)
	}
	u, err := startUserspace(cfg, ModeTUN, tdev)
	if err != nil {
		if unpersist != nil {
			unpersist()
		}
		return nil, err
	}
	u.beforeClose = unpersist
	if err := configureLink(cfg); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

// createTUN opens the TUN device (or attaches to a persistent one) as
// tun.CreateTUN does: IFF_VNET_HDR, so that wireguard-go turns on TSO/USO
// (and conn.NewDefaultBind uses UDP GSO/GRO); opening it any other way
// would lose those offloads. Unlike tun.CreateTUN it leaves the device
// unmonitored: tun.CreateTUNFromFile polls the device's state with an
// empty write every second (its "hack listener") and follows the link on
// netlink, to bring wireguard-go up and down with the link and follow its
// MTU. weft brings the device up itself and sets the MTU, here before
// wireguard-go reads it and in configureLink. The poll was one of the
// dozen wakeups a second of an idle agent, each ~0.15 ms of CPU on the
// benchmark machine (BenchmarkMesh25).
func createTUN(name string, mtu int) (tun.Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			err = fmt.Errorf("TUNSETIFF: %w", err)
		}
	}
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err == nil {
		var link netlink.Link
		if link, err = netlink.LinkByName(name); err != nil {
			err = fmt.Errorf("find link: %w", err)
		} else {
			err = setLinkMTU(link, mtu)
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// From here the descriptor belongs to the device's os.File.
	dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd)
	return dev, err
}

// setLinkMTU sets the link's MTU unless it has it already.
func setLinkMTU(link netlink.Link, mtu int) error {
	if link.Attrs().MTU == mtu {
		return nil
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set mtu %d: %w", mtu, err)
	}
	return nil
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
	if err := setLinkMTU(link, cfg.MTU); err != nil {
		return fmt.Errorf("tunnel %s: %w", cfg.Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("tunnel %s: set up: %w", cfg.Name, err)
	}
	return nil
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// setPersist sets TUNSETPERSIST on the TUN's file descriptor. It goes
// through SyscallConn: os.File.Fd would switch the descriptor to blocking
// mode under wireguard-go's poller.
func setPersist(dev tun.Device, on bool) error {
	f := dev.File()
	if f == nil {
		return fmt.Errorf("set persist: TUN has no file")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("set persist: %w", err)
	}
	v := 0
	if on {
		v = 1
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, v) }); err != nil {
		return fmt.Errorf("set persist: %w", err)
	}
	if ioErr != nil {
		return fmt.Errorf("set persist: TUNSETPERSIST: %w", ioErr)
	}
	return nil
}
