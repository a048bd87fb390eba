package agent

import (
	"errors"
	"os"

	"github.com/weftnet/weft/agent/api"
)

// leaveHandover writes the note at shutdown when the node keeps its block.
func (a *Agent) leaveHandover() {
	if a.cfg.SocketPath == "-" || a.cfg.SocketPath == "" {
		return
	}
	a.mu.Lock()
	block, ready := a.tags.Block, a.ready
	a.mu.Unlock()
	if !ready || !block.IsValid() {
		return
	}
	h := api.Handover{Block: block.String(), Until: a.cfg.Now().Add(api.HandoverGrace)}
	if err := api.WriteHandover(a.cfg.SocketPath, h); err != nil {
		a.log.Warn("could not leave a handover note for the CNI plugin", "err", err)
	}
}

// dropHandover removes a note: this agent is ready, or leaves for good.
func (a *Agent) dropHandover() {
	if a.cfg.SocketPath == "-" || a.cfg.SocketPath == "" {
		return
	}
	if err := os.Remove(api.HandoverPath(a.cfg.SocketPath)); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("could not remove the handover note", "err", err)
	}
}
