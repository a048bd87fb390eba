package membership

import "time"

// What a member's gossip knows, for diagnosis: the keys it holds, how it
// knows of another member, and which failed members its probe acks list.
// The agent's simulations check these; nothing in the agent decides by
// them.

// Keys returns the gossip keyring, primary first; nil without encryption.
func (m *Membership) Keys() [][]byte {
	if m.keyring == nil {
		return nil
	}
	return m.keyring.GetKeys()
}

// GossipStatus is Serf's status of member name ("alive", "leaving",
// "left", "failed"), and false if Serf does not know it.
func (m *Membership) GossipStatus(name string) (string, bool) {
	for _, sm := range m.serf.Members() {
		if sm.Name == name {
			return sm.Status.String(), true
		}
	}
	return "", false
}

// Learned reports whether name is a failed member known from another
// member's notice or probe ack only, with when it failed and when the last
// word of it came.
func (m *Membership) Learned(name string) (failed, heard time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.learned[name]
	return l.since, l.heard, ok
}

// HeldInAcks lists the failed members this member's probe acks tell of now.
func (m *Membership) HeldInAcks() ([]string, error) {
	held, err := parseHeld(m.ackPayload(), time.Hour)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(held))
	for i, h := range held {
		names[i] = h.Name
	}
	return names, nil
}
