package agent

import (
	"context"
	"net/netip"

	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/tunnel"
)

// openDevice opens the WireGuard device of the node's identity.
func (a *Agent) openDevice(ctx context.Context, mode tunnel.Mode) error {
	cfg := tunnel.Config{
		Name:       a.cfg.Interface,
		Mode:       mode,
		PrivateKey: a.state.Key,
		ListenPort: a.cfg.ListenPort,
		MTU:        a.cfg.MTU,
		Logger:     a.log,
		// A killed agent leaves the interface and its routes in place and
		// the restarted one adopts them: streams across the node survive.
		Persist: true,
		// A netstack node is one with no TUN and no NET_ADMIN, most likely
		// not root either (a sidecar): /var/run/wireguard may be out of
		// reach, which must not keep the mesh down.
		UAPIOptional: mode == tunnel.ModeNetstack,
	}
	if mode == tunnel.ModeNetstack {
		cfg.Address = netip.PrefixFrom(plan.NodeAddress(a.state.Block), a.state.Block.Addr().BitLen())
	}
	dev, err := tunnel.Open(ctx, cfg)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.dev = dev
	a.mu.Unlock()
	if mode != tunnel.ModeNetstack {
		a.routes = &hostRoutes{link: a.cfg.Interface}
	}
	return a.applyAddress(netip.Prefix{})
}

// applyAddress puts the node address of the current block on the device:
// on the kernel link in host mode, in the userspace stack in netstack mode
// (replacing the address of a block given up).
func (a *Agent) applyAddress(old netip.Prefix) error {
	if nd, ok := a.dev.(*tunnel.NetstackDevice); ok && old.IsValid() {
		return nd.Stack().ReplaceAddress(plan.NodeAddress(old), plan.NodeAddress(a.state.Block))
	}
	if a.routes == nil {
		return nil
	}
	return a.routes.setAddress(plan.NodeAddress(a.state.Block))
}

// rotateKey replaces the WireGuard key: persist, switch the device, then
// announce, so peers learn the new key from gossip within a round.
func (a *Agent) rotateKey() error {
	k, err := tunnel.GeneratePrivateKey()
	if err != nil {
		return err
	}
	st := a.state
	st.Key = k
	if err := a.saveState(st); err != nil {
		return err
	}
	if a.dev != nil {
		if err := a.dev.SetPrivateKey(k); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.state = st
	a.tags.PublicKey = k.Public()
	tags := a.tags
	a.mu.Unlock()
	a.metrics.rotations.Inc()
	a.log.Info("WireGuard key rotated", "key", k)
	return a.mem.SetTags(tags)
}
