package agent

import "github.com/weftnet/weft/tunnel"

// handshaken lists the peers of the device that have completed a
// handshake.
func (a *Agent) handshaken() map[tunnel.Key]bool {
	out := map[tunnel.Key]bool{}
	if a.dev == nil {
		return out
	}
	st, err := a.dev.Stats()
	if err != nil {
		return out
	}
	for _, p := range st.Peers {
		if !p.LastHandshake.IsZero() {
			out[p.PublicKey] = true
		}
	}
	return out
}
