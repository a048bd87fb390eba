package tunnel

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/tun"
)

// Probes are the checks Detect runs. A nil field means the real probe; tests
// set them to force "no kernel module" or "no TUN".
type Probes struct {
	// Kernel returns nil if a kernel WireGuard link can be created here.
	Kernel func() error
	// TUN returns nil if a TUN device can be created here.
	TUN func() error
}

// Attempt records one backend Detect tried and why it was not taken.
type Attempt struct {
	Mode Mode
	Err  error
}

// Detect picks the best backend this node can run, by trying rather than
// guessing: kernel if a wireguard link can be created, else tun if a TUN
// device can be created, else netstack, which needs nothing.
func Detect(p Probes) (Mode, []Attempt) {
	if p.Kernel == nil {
		p.Kernel = ProbeKernel
	}
	if p.TUN == nil {
		p.TUN = ProbeTUN
	}
	var tried []Attempt
	for _, c := range []struct {
		mode  Mode
		probe func() error
	}{{ModeKernel, p.Kernel}, {ModeTUN, p.TUN}} {
		err := c.probe()
		tried = append(tried, Attempt{Mode: c.mode, Err: err})
		if err == nil {
			return c.mode, tried
		}
	}
	tried = append(tried, Attempt{Mode: ModeNetstack})
	return ModeNetstack, tried
}

// ErrNoKernelWireGuard says the kernel cannot create wireguard links.
var ErrNoKernelWireGuard = errors.New("kernel has no WireGuard support")

// ProbeKernel creates and deletes a throw-away wireguard link in the calling
// thread's network namespace.
func ProbeKernel() error {
	name := probeName()
	err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}})
	if err != nil {
		return fmt.Errorf("%w: ip link add %s type wireguard: %v", ErrNoKernelWireGuard, name, err)
	}
	if l, err := netlink.LinkByName(name); err == nil {
		netlink.LinkDel(l)
	}
	return nil
}

// ProbeTUN creates and closes a throw-away TUN device. Opening /dev/net/tun is
// not enough: without CAP_NET_ADMIN the open works and TUNSETIFF fails.
func ProbeTUN() error {
	dev, err := tun.CreateTUN(probeName(), MinMTU)
	if err != nil {
		return fmt.Errorf("create TUN: %w", err)
	}
	// Creating it is the answer. Close can report EPIPE from wireguard-go's
	// listener cancel pipe when its netlink goroutine has already ended (seen
	// under -race); the device is gone either way.
	dev.Close()
	return nil
}

func probeName() string {
	var b [4]byte
	rand.Read(b[:])
	return "weftprobe" + hex.EncodeToString(b[:3])
}
