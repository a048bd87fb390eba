package membership

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Start creates the Serf instance (it starts listening at once).
func Start(cfg Config) (*Membership, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	tags, err := cfg.Tags.Encode()
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	sc, err := serfConfig(cfg, tags)
	if err != nil {
		return nil, err
	}
	acks := &heldAcks{}
	sc.MemberlistConfig.Ping = acks
	own, err := setTransport(cfg, sc.MemberlistConfig)
	if err != nil {
		return nil, err
	}
	events := make(chan serf.Event, 256)
	sc.EventCh = events
	s, err := serf.Create(sc)
	if err != nil {
		if own != nil {
			own.Shutdown()
		}
		return nil, fmt.Errorf("membership: start serf on %s: %w", cfg.Bind, err)
	}
	m := newMembership(cfg, s, sc.MemberlistConfig, tags, events)
	acks.m.Store(m)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(2)
	go m.loop(ctx)
	go m.reconnectLoop(ctx)
	return m, nil
}

func (cfg *Config) setDefaults() error {
	if cfg.NodeName == "" {
		return errors.New("membership: node name is empty")
	}
	if len(cfg.Keys) == 0 && !cfg.Insecure {
		return ErrNoGossipKey
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HoldFor <= 0 {
		cfg.HoldFor = 10 * time.Minute
	}
	return nil
}

// serfConfig is Serf's and memberlist's configuration for cfg, with the
// initial tags, but no transport yet.
func serfConfig(cfg Config, tags map[string]string) (*serf.Config, error) {
	sc := serf.DefaultConfig()
	sc.NodeName = cfg.NodeName
	sc.Tags = tags
	sc.RejoinAfterLeave = true
	sc.EnableNameConflictResolution = true
	sc.ValidateNodeNames = true
	// Probe acks carry held blocks instead of Serf's network coordinates,
	// which weft never reads (failed.go).
	sc.DisableCoordinates = true
	switch cfg.Profile {
	case "", "lan":
		sc.MemberlistConfig = lanConfig()
	case "local":
		sc.MemberlistConfig = memberlist.DefaultLocalConfig()
		sc.MemberlistConfig.PushPullInterval = 5 * time.Second
		sc.ReapInterval = time.Second
		sc.ReconnectInterval = 2 * time.Second
	default:
		return nil, fmt.Errorf("membership: profile %q: want lan or local", cfg.Profile)
	}
	mc := sc.MemberlistConfig
	mc.Name = cfg.NodeName
	cfg.Timings.apply(mc)
	// Tag changes (a lease, a key) are rare and must reach every member:
	// retransmit each broadcast more than memberlist's default before
	// push-pull anti-entropy (tens of seconds in a big mesh) repairs a miss.
	mc.RetransmitMult = 6
	// memberlist compresses every gossip packet with LZW by default, which
	// allocates a fresh 16 KiB table per packet: a quarter of the CPU of a
	// 100-agent simulation converging, in a profile, for packets of a few
	// hundred bytes.
	mc.EnableCompression = false
	setAddresses(cfg, mc)
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("membership: gossip keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	sc.Logger = log.New(&logWriter{l: cfg.Logger.With("component", "serf")}, "", 0)
	mc.Logger = sc.Logger
	return sc, nil
}

// lanConfig is memberlist's LAN configuration with weft's gossip rounds:
// 400 ms apart to 8 members. An idle round sends nothing, but it is a
// wakeup of every agent, and at LAN's 200 ms (to 3) or the 100 ms (to 4)
// weft used before, the rounds were the largest share of an idle agent's
// wakeups (each ~0.15 ms of CPU on the benchmark machine). A change still
// reaches a 25-member mesh in two or three rounds, as fast as before: each
// round reaches more members, and a broadcast is sent as many times in all
// (its retransmit limit).
func lanConfig() *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.GossipInterval = 400 * time.Millisecond
	mc.GossipNodes = 8
	return mc
}

// apply sets the timings of t that are set on mc.
func (t Timings) apply(mc *memberlist.Config) {
	if t.GossipInterval > 0 {
		mc.GossipInterval = t.GossipInterval
	}
	if t.GossipNodes > 0 {
		mc.GossipNodes = t.GossipNodes
	}
	if t.ProbeInterval > 0 {
		mc.ProbeInterval = t.ProbeInterval
	}
	if t.ProbeTimeout > 0 {
		mc.ProbeTimeout = t.ProbeTimeout
	}
	if t.SuspicionMult > 0 {
		mc.SuspicionMult = t.SuspicionMult
	}
}

// setAddresses sets the bind and advertised gossip addresses of cfg on mc.
func setAddresses(cfg Config, mc *memberlist.Config) {
	if cfg.Bind.IsValid() {
		mc.BindAddr = cfg.Bind.Addr().String()
		mc.BindPort = int(cfg.Bind.Port())
		mc.AdvertisePort = int(cfg.Bind.Port())
	}
	if cfg.Advertise.IsValid() {
		mc.AdvertiseAddr = cfg.Advertise.Addr().String()
		mc.AdvertisePort = int(cfg.Advertise.Port())
	}
}

// setTransport gives mc cfg's transport, or opens weft's own on the bind
// address (returned, for the caller to shut down should Serf not start).
func setTransport(cfg Config, mc *memberlist.Config) (*Transport, error) {
	if cfg.Transport != nil {
		mc.Transport = cfg.Transport
		return nil, nil
	}
	bind := netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(mc.BindPort))
	if cfg.Bind.IsValid() {
		bind = cfg.Bind
	}
	own, err := NewTransport(bind, mc.Logger)
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	if mc.BindPort == 0 {
		mc.BindPort = own.Port()
		if mc.AdvertisePort == 0 {
			mc.AdvertisePort = own.Port()
		}
	}
	mc.Transport = own
	return own, nil
}

// newMembership is the Membership of a created Serf instance, before its
// loops run.
func newMembership(cfg Config, s *serf.Serf, mc *memberlist.Config, tags map[string]string, events chan serf.Event) *Membership {
	return &Membership{
		want:    tags,
		self:    cfg.NodeName,
		serf:    s,
		keyring: mc.Keyring,
		events:  events,
		changed: make(chan struct{}, 1),
		tagsSet: make(chan struct{}, 1),
		log:     cfg.Logger,
		now:     cfg.Now,
		seen:    map[string]seenStatus{},
		learned: map[string]learnedMember{},
		decoded: map[string]decodedTags{},
		holdFor: cfg.HoldFor,

		heard:      make(chan struct{}),
		heldWait:   2*mc.ProbeInterval + mc.ProbeTimeout,
		ignoreAcks: cfg.IgnoreAcks,
		onProbe:    cfg.OnProbe,
	}
}
