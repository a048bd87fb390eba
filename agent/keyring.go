package agent

// reloadGossipKeys applies the key source, if any.
func (a *Agent) reloadGossipKeys() {
	if a.cfg.GossipKeySource == nil {
		return
	}
	keys, err := a.cfg.GossipKeySource()
	if err != nil {
		a.log.Warn("gossip key source unreadable; keeping the current keyring", "err", err)
		return
	}
	changed, err := a.mem.SetKeyring(keys)
	if err != nil {
		a.log.Error("gossip keyring update failed", "err", err)
		return
	}
	if changed {
		a.metrics.gossipKeyChanges.Inc()
		a.log.Info("gossip keyring updated from its source", "keys", len(keys))
	}
}
