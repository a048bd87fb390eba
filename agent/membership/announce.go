package membership

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/weftnet/weft/agent/plan"
)

// selfCheck is how often checkAdvertised runs (jittered), and
// selfCheckAfterSet how soon after SetTags: a lost update is found within
// seconds of the change that races.
const (
	selfCheck         = 15 * time.Second
	selfCheckAfterSet = 2 * time.Second
)

func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d) }

// SetTags sets new tags and announces them in the background: Members
// shows them for this member at once. Serf's SetTags returns only once
// memberlist has sent the update its last time (a few gossip rounds; up to
// Serf's BroadcastTimeout, 5 s), and a newcomer that waited for that after
// claiming its block opened its device ~1 s late (BenchmarkMesh25).
func (m *Membership) SetTags(t plan.Tags) error {
	tags, err := t.Encode()
	if err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	m.mu.Lock()
	m.want = tags
	m.mu.Unlock()
	select {
	case m.tagsSet <- struct{}{}:
	default:
	}
	m.wg.Add(1)
	m.announcing.Add(1)
	go func() {
		defer m.wg.Done()
		defer m.announcing.Done()
		m.announceWant()
	}()
	return nil
}

// announceWant hands memberlist the tags set last (SetTags). Each
// announcement takes the latest tags, so the last to run announces what was
// set last, and one that finds them announced already does nothing.
func (m *Membership) announceWant() {
	m.announce.Lock()
	defer m.announce.Unlock()
	if want, stale := m.advertisedStale(); stale {
		m.sendTags(want)
	}
}

// checkAdvertised announces our tags again when memberlist advertises
// others. memberlist (v0.7.0) can drop a tag update for good: UpdateNode
// takes an incarnation number before it locks, and a refutation running at
// the same moment (common on a busy node whose probes time out) takes a
// higher one and re-broadcasts the old metadata; the update is then "older"
// and discarded, and every later refutation and push-pull repeats the old
// tags. Every member's view then holds our old tags (an old block) while we
// hold the new one. Serf's LocalMember is memberlist's accepted state of us
// (Serf updates it from memberlist's update events), so comparing it with
// what we set finds exactly that case.
//
// Only on a difference: Serf encodes tags as a msgpack map in random key
// order, so even unchanged tags look changed to every member, and a
// periodic re-announcement makes the whole mesh gossip and reconcile.
//
// again announces even when memberlist advertises what we want (the first
// check after a change, see loop). It reports whether it announced.
func (m *Membership) checkAdvertised(again bool) bool {
	m.announce.Lock()
	defer m.announce.Unlock()
	want, stale := m.advertisedStale()
	if stale {
		m.log.Info("memberlist advertises old tags for us; announcing again")
	} else if !again {
		return false
	}
	m.sendTags(want)
	return true
}

// advertisedStale returns the tags set last and whether memberlist
// advertises others for us. The caller holds m.announce, so that
// announcements take turns.
func (m *Membership) advertisedStale() (want map[string]string, stale bool) {
	m.mu.Lock()
	want = m.want
	m.mu.Unlock()
	return want, !maps.Equal(m.serf.LocalMember().Tags, want)
}

// errBroadcastPending is Serf's SetTags running out of time to see the
// update broadcast (Serf's BroadcastTimeout, on a busy node): Serf and
// memberlist have taken the tags, and gossip carries them on.
var errBroadcastPending = errors.New("tag update taken; its broadcast is not confirmed yet")

// sendTags hands want to Serf, which broadcasts it, and logs the outcome.
func (m *Membership) sendTags(want map[string]string) {
	err := m.setSerfTags(want)
	switch {
	case err == nil:
	case errors.Is(err, errBroadcastPending):
		m.log.Info("tag update not yet spread; gossip carries it on", "err", err)
	default:
		m.log.Warn("announcing tags failed", "err", err)
	}
}

// setSerfTags is Serf's SetTags with its one failure after the update was
// taken told apart as errBroadcastPending. Serf refuses, before taking
// them, tags that encode to more than memberlist.MetaMaxSize bytes
// (plan.Tags.Encode refuses those already); past that check the only
// error left is memberlist's UpdateNode timing out on the broadcast.
func (m *Membership) setSerfTags(want map[string]string) error {
	err := m.serf.SetTags(want)
	if err == nil || plan.TagsSize(want) > memberlist.MetaMaxSize {
		return err
	}
	return fmt.Errorf("%w: %v", errBroadcastPending, err)
}
