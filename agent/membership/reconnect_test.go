package membership

import (
	"math/rand/v2"
	"testing"
)

// TestTakesPart: a small mesh always tries its failed members; in a big one
// about reconnectFanout agents do per round, and an agent that sees only
// itself alive always tries.
func TestTakesPart(t *testing.T) {
	for _, alive := range []int{1, 2, reconnectFanout} {
		if !takesPart(alive, func(int) int { return alive - 1 }) {
			t.Errorf("alive=%d: an agent sat a round out", alive)
		}
	}
	for _, alive := range []int{reconnectFanout + 1, 200, 1000} {
		const rounds = 100000
		n := 0
		for range rounds {
			if takesPart(alive, rand.N[int]) {
				n++
			}
		}
		// Expected per round over the whole mesh: reconnectFanout.
		perRound := float64(n) / rounds * float64(alive)
		if perRound < reconnectFanout*0.8 || perRound > reconnectFanout*1.2 {
			t.Errorf("alive=%d: %.1f agents per round take part, want about %d", alive, perRound, reconnectFanout)
		}
	}
}
