//go:build race

package agent

// raceEnabled scales the in-process simulations down: the race detector
// makes every Serf agent several times slower, and a starved failure
// detector reports live members dead.
const raceEnabled = true
