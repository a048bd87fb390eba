package agent

import (
	"github.com/weftnet/weft/agent/plan"
	prom "github.com/weftnet/weft/internal/metrics"
	"github.com/weftnet/weft/tunnel"
)

// metrics are the agent's Prometheus series (weft_*, registered in newMetrics).
type metrics struct {
	members     *prom.GaugeVec
	peers       *prom.Gauge
	blocks      *prom.GaugeVec
	conflicts   *prom.Counter
	unreachable *prom.Gauge
	invalid     *prom.Gauge
	reconcile   *prom.Histogram
	rotations   *prom.Counter
	// gossipKeyChanges counts keyring updates taken from the key source.
	gossipKeyChanges *prom.Counter
}

func newMetrics(reg *prom.Registry, a *Agent) *metrics {
	m := &metrics{
		members:          reg.NewGaugeVec("weft_members", "Mesh members by state.", "state"),
		peers:            reg.NewGauge("weft_peers", "WireGuard peers configured."),
		blocks:           reg.NewGaugeVec("weft_ipam_blocks", "Blocks of the cluster range by state (owned, held by failed members, free).", "state"),
		conflicts:        reg.NewCounter("weft_ipam_conflicts_total", "Lease conflicts this node lost and resolved by re-leasing."),
		unreachable:      reg.NewGauge("weft_ipam_unreachable_blocks", "Blocks held by failed members within the lease TTL."),
		invalid:          reg.NewGauge("weft_members_invalid_tags", "Members ignored because their tags are malformed, too large, of another version or out of range."),
		reconcile:        reg.NewHistogram("weft_reconcile_seconds", "Time of one reconcile pass.", prom.ExponentialBuckets(0.0005, 2, 14)),
		rotations:        reg.NewCounter("weft_key_rotations_total", "WireGuard key rotations."),
		gossipKeyChanges: reg.NewCounter("weft_gossip_keyring_changes_total", "Gossip keyring updates taken from the key file."),
	}
	p := &peerStats{a: a}
	reg.NewFunc("weft_peer_last_handshake_seconds", "Unix time of the last handshake with a peer.", prom.GaugeType, "peer", p.each(func(s tunnel.PeerStats) float64 {
		if s.LastHandshake.IsZero() {
			return 0
		}
		return float64(s.LastHandshake.UnixNano()) / 1e9
	}))
	reg.NewFunc("weft_peer_rx_bytes_total", "Bytes received from a peer.", prom.CounterType, "peer", p.each(func(s tunnel.PeerStats) float64 { return float64(s.RxBytes) }))
	reg.NewFunc("weft_peer_tx_bytes_total", "Bytes sent to a peer.", prom.CounterType, "peer", p.each(func(s tunnel.PeerStats) float64 { return float64(s.TxBytes) }))
	return m
}

func (m *metrics) observe(members []plan.Member, leases plan.Leases, want plan.DesiredState) {
	counts := map[plan.Status]int{}
	invalid := 0
	for _, mem := range members {
		counts[mem.Status]++
		if mem.TagsErr != nil {
			invalid++
		}
	}
	for _, s := range []plan.Status{plan.StatusAlive, plan.StatusFailed, plan.StatusLeft} {
		m.members.With(s.String()).Set(float64(counts[s]))
	}
	m.invalid.Set(float64(invalid))
	m.peers.Set(float64(len(want.Peers)))
	owned, held := 0, 0
	for _, mem := range members {
		if mem.TagsErr != nil || !mem.Tags.Block.IsValid() {
			continue
		}
		if owner, ok := leases.Owner(mem.Tags.Block); ok && owner == mem.Name {
			if mem.Status == plan.StatusFailed {
				held++
			} else {
				owned++
			}
		}
	}
	m.blocks.With("owned").Set(float64(owned))
	m.blocks.With("failed").Set(float64(held))
	m.unreachable.Set(float64(held))
}

// peerStats reads WireGuard's counters at scrape time, each peer named by
// its member name (its key's fingerprint if no member has that key).
type peerStats struct{ a *Agent }

func (p *peerStats) each(value func(tunnel.PeerStats) float64) func(emit func(string, float64)) {
	return func(emit func(string, float64)) {
		p.a.mu.Lock()
		dev := p.a.dev
		names := map[tunnel.Key]string{}
		for _, m := range p.a.last.members {
			if m.TagsErr == nil {
				names[m.Tags.PublicKey] = m.Name
			}
		}
		p.a.mu.Unlock()
		if dev == nil {
			return
		}
		st, err := dev.Stats()
		if err != nil {
			return
		}
		for _, s := range st.Peers {
			name := names[s.PublicKey]
			if name == "" {
				name = tunnel.Fingerprint(s.PublicKey)
			}
			emit(name, value(s))
		}
	}
}
