package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/tunnel"
)

// metrics are the agent's Prometheus series (names in DESIGN.md).
type metrics struct {
	members     *prometheus.GaugeVec
	peers       prometheus.Gauge
	blocks      *prometheus.GaugeVec
	conflicts   prometheus.Counter
	unreachable prometheus.Gauge
	invalid     prometheus.Gauge
	reconcile   prometheus.Histogram
	rotations   prometheus.Counter
	// gossipKeyChanges counts keyring updates taken from the key source.
	gossipKeyChanges prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, a *Agent) *metrics {
	m := &metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_members", Help: "Mesh members by state."}, []string{"state"}),
		peers:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_peers", Help: "WireGuard peers configured."}),
		blocks:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_ipam_blocks", Help: "Blocks of the cluster range by state (owned, held by failed members, free)."}, []string{"state"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_ipam_conflicts_total",
			Help: "Lease conflicts this node lost and resolved by re-leasing."}),
		unreachable: prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_ipam_unreachable_blocks", Help: "Blocks held by failed members within the lease TTL."}),
		invalid:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "weft_members_invalid_tags", Help: "Members ignored because their tags are malformed, too large, of another version or out of range."}),
		reconcile:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_reconcile_seconds", Help: "Time of one reconcile pass.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		rotations:   prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_key_rotations_total", Help: "WireGuard key rotations."}),
		gossipKeyChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_gossip_keyring_changes_total",
			Help: "Gossip keyring updates taken from the key file."}),
	}
	reg.MustRegister(m.members, m.peers, m.blocks, m.conflicts, m.unreachable, m.invalid, m.reconcile, m.rotations, m.gossipKeyChanges, &peerCollector{a: a})
	return m
}

func (m *metrics) observe(members []Member, leases Leases, want DesiredState) {
	counts := map[Status]int{}
	invalid := 0
	for _, mem := range members {
		counts[mem.Status]++
		if mem.TagsErr != nil {
			invalid++
		}
	}
	for _, s := range []Status{StatusAlive, StatusFailed, StatusLeft} {
		m.members.WithLabelValues(s.String()).Set(float64(counts[s]))
	}
	m.invalid.Set(float64(invalid))
	m.peers.Set(float64(len(want.Peers)))
	owned, held := 0, 0
	for _, mem := range members {
		if mem.TagsErr != nil || !mem.Tags.Block.IsValid() {
			continue
		}
		if owner, ok := leases.Owner(mem.Tags.Block); ok && owner == mem.Name {
			if mem.Status == StatusFailed {
				held++
			} else {
				owned++
			}
		}
	}
	m.blocks.WithLabelValues("owned").Set(float64(owned))
	m.blocks.WithLabelValues("failed").Set(float64(held))
	m.unreachable.Set(float64(held))
}

// peerCollector reads WireGuard counters at scrape time.
type peerCollector struct{ a *Agent }

var (
	descHandshake = prometheus.NewDesc("weft_peer_last_handshake_seconds", "Unix time of the last handshake with a peer.", []string{"peer"}, nil)
	descRx        = prometheus.NewDesc("weft_peer_rx_bytes_total", "Bytes received from a peer.", []string{"peer"}, nil)
	descTx        = prometheus.NewDesc("weft_peer_tx_bytes_total", "Bytes sent to a peer.", []string{"peer"}, nil)
)

func (c *peerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHandshake
	ch <- descRx
	ch <- descTx
}

func (c *peerCollector) Collect(ch chan<- prometheus.Metric) {
	c.a.mu.Lock()
	dev := c.a.dev
	names := map[tunnel.Key]string{}
	for _, m := range c.a.last.members {
		if m.TagsErr == nil {
			names[m.Tags.PublicKey] = m.Name
		}
	}
	c.a.mu.Unlock()
	if dev == nil {
		return
	}
	st, err := dev.Stats()
	if err != nil {
		return
	}
	for _, p := range st.Peers {
		name := names[p.PublicKey]
		if name == "" {
			name = tunnel.Fingerprint(p.PublicKey)
		}
		hs := 0.0
		if !p.LastHandshake.IsZero() {
			hs = float64(p.LastHandshake.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(descHandshake, prometheus.GaugeValue, hs, name)
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(p.RxBytes), name)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(p.TxBytes), name)
	}
}
