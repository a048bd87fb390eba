package tunnel

import (
	"context"
	"fmt"
)

// Device is one WireGuard interface, whatever its backend.
type Device interface {
	// Name is the interface name (and UAPI socket name for userspace devices).
	Name() string
	// Mode is the backend that carries the device.
	Mode() Mode
	// PublicKey is the device's current public key.
	PublicKey() Key
	// SetPeers makes the device's peers exactly peers, changing only those
	// that differ from what the device has.
	SetPeers(peers []Peer) error
	// SetPrivateKey replaces the device's key (key rotation). Peers stay
	// configured; sessions re-handshake with the new key.
	SetPrivateKey(k PrivateKey) error
	// Stats reads the device's peers, handshakes and byte counters.
	Stats() (Stats, error)
	// Close takes the device down and releases what it holds.
	Close() error
}

// Open brings up a device as cfg says, running Detect first when cfg.Mode is
// auto. Every kernel object (link, TUN, UDP sockets) is created in the network
// namespace of the calling thread, so a caller that wants the device in
// another namespace calls Open under ns.WithNetNSPath.
func Open(ctx context.Context, cfg Config) (Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	mode := cfg.Mode
	if mode == "" || mode == ModeAuto {
		var attempts []Attempt
		mode, attempts = Detect(cfg.Probes)
		for _, a := range attempts {
			if a.Err != nil {
				cfg.Logger.Info("tunnel backend unavailable", "mode", a.Mode, "reason", a.Err)
			}
		}
		cfg.Logger.Info("tunnel backend chosen", "mode", mode)
	}
	switch mode {
	case ModeKernel:
		return openKernel(ctx, cfg)
	case ModeTUN:
		return openTUN(ctx, cfg)
	case ModeNetstack:
		return OpenNetstack(ctx, cfg)
	}
	return nil, fmt.Errorf("tunnel %s: unknown mode %q", cfg.Name, mode)
}
