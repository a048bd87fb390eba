package api

import (
	"encoding/json"
	"net/netip"
	"os"
	"time"

	"github.com/weftnet/weft/internal/atomicfile"
)

// A restart (LeaveOnExit off: the DaemonSet's rolling update, a crash
// loop's restart) keeps the node's block, device and routes for the next
// agent, but for the seconds until that agent is ready nobody answers on
// the socket. The kubelet turns a failed CNI STATUS into a NotReady node,
// so the stopping agent leaves a handover note beside its socket: the CNI
// plugin's STATUS tells "restarting, the pod network stays" from "stopped"
// by it, and keeps the node Ready for HandoverGrace at most. ADD still
// waits for the new agent (try again later). The new agent removes the
// note once it is ready.

// HandoverGrace bounds how long a handover note keeps STATUS ready without
// an agent: longer than a rollout's gap between two agents on a node.
const HandoverGrace = time.Minute

// Handover is the note a restarting agent leaves.
type Handover struct {
	// Block is the block the node keeps.
	Block string `json:"block"`
	// Until is when the note stops counting.
	Until time.Time `json:"until"`
}

// HandoverPath is where the note for the agent at socket lives.
func HandoverPath(socket string) string { return socket + ".handover" }

// WriteHandover writes the note for the agent at socket, atomically.
func WriteHandover(socket string, h Handover) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return atomicfile.Write(HandoverPath(socket), append(b, '\n'), 0o644)
}

// ReadHandover returns the note for the agent at socket when there is one
// that is well formed, names a block and has not expired at now.
func ReadHandover(socket string, now time.Time) (Handover, bool) {
	b, err := os.ReadFile(HandoverPath(socket))
	if err != nil {
		return Handover{}, false
	}
	var h Handover
	if json.Unmarshal(b, &h) != nil {
		return Handover{}, false
	}
	if _, err := netip.ParsePrefix(h.Block); err != nil || !now.Before(h.Until) {
		return Handover{}, false
	}
	return h, true
}
