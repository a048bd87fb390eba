package tunnel

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/netstack"
)

// NetstackDevice is a wireguard-go device on a userspace gVisor stack: no
// TUN, no capabilities. Its overlay address lives only inside the process;
// reach it through Stack().Dial*/Listen*.
type NetstackDevice struct {
	*userspace
	stack *netstack.Stack
}

// OpenNetstack brings up a netstack device. cfg.Address is required: it is
// the stack's own address in the overlay.
func OpenNetstack(_ context.Context, cfg Config) (*NetstackDevice, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if !cfg.Address.IsValid() {
		return nil, fmt.Errorf("tunnel %s: netstack needs an overlay address", cfg.Name)
	}
	st, err := netstack.New(netstack.Config{
		Addresses: []netip.Addr{cfg.Address.Addr()},
		MTU:       cfg.MTU,
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: %w", cfg.Name, err)
	}
	u, err := startUserspace(cfg, ModeNetstack, st)
	if err != nil {
		return nil, err
	}
	return &NetstackDevice{userspace: u, stack: st}, nil
}

// Stack is the device's TCP/IP stack, for Dial and Listen on the overlay.
func (d *NetstackDevice) Stack() *netstack.Stack { return d.stack }
