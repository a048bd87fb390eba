package tunnel

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// kernelDevice is a `wireguard` link, created with netlink and configured
// through wgctrl's generic netlink family. It is deliberately thin: the kernel
// does the work, and the build machines have no module to test it on beyond
// Detect's probe.
type kernelDevice struct {
	name   string
	client *wgctrl.Client
	mu     sync.Mutex
	once   sync.Once
	err    error
}

func openKernel(_ context.Context, cfg Config) (Device, error) {
	link, err := netlink.LinkByName(cfg.Name)
	switch {
	case err == nil && link.Type() != "wireguard":
		return nil, fmt.Errorf("tunnel %s: a %s link of that name exists", cfg.Name, link.Type())
	case err != nil:
		// A link that is already there is adopted, so a restarted agent keeps
		// its sessions and routes.
		if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: cfg.Name, MTU: cfg.MTU}}); err != nil {
			return nil, fmt.Errorf("tunnel %s: ip link add type wireguard: %w", cfg.Name, err)
		}
	}
	client, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: wgctrl: %w", cfg.Name, err)
	}
	d := &kernelDevice{name: cfg.Name, client: client}
	k := cfg.PrivateKey.wg()
	port := cfg.ListenPort
	if err := client.ConfigureDevice(cfg.Name, wgtypes.Config{PrivateKey: &k, ListenPort: &port}); err != nil {
		d.Close()
		return nil, fmt.Errorf("tunnel %s: configure: %w", cfg.Name, err)
	}
	if err := configureLink(cfg); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *kernelDevice) Name() string { return d.name }
func (d *kernelDevice) Mode() Mode   { return ModeKernel }

func (d *kernelDevice) PublicKey() Key {
	st, err := d.Stats()
	if err != nil {
		return Key{}
	}
	return st.PublicKey
}

func (d *kernelDevice) Stats() (Stats, error) {
	wd, err := d.client.Device(d.name)
	if err != nil {
		return Stats{}, fmt.Errorf("tunnel %s: read device: %w", d.name, err)
	}
	st := statsFromWgctrl(wd)
	st.Mode = ModeKernel
	return st, nil
}

func (d *kernelDevice) SetPeers(peers []Peer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, err := applyPeers(d.name, d.Stats, peers, func(pcs []wgtypes.PeerConfig) error {
		return d.client.ConfigureDevice(d.name, wgtypes.Config{Peers: pcs})
	})
	return err
}

func (d *kernelDevice) SetPrivateKey(k PrivateKey) error {
	if k.IsZero() {
		return fmt.Errorf("tunnel %s: private key is unset", d.name)
	}
	wk := k.wg()
	if err := d.client.ConfigureDevice(d.name, wgtypes.Config{PrivateKey: &wk}); err != nil {
		return fmt.Errorf("tunnel %s: set private key: %w", d.name, err)
	}
	return nil
}

// Close deletes the link and releases the wgctrl client.
func (d *kernelDevice) Close() error {
	d.once.Do(func() {
		var errs []error
		if l, err := netlink.LinkByName(d.name); err == nil {
			errs = append(errs, netlink.LinkDel(l))
		}
		errs = append(errs, d.client.Close())
		d.err = errors.Join(errs...)
	})
	return d.err
}
