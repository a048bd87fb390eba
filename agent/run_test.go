package agent

import (
	"testing"
	"time"
)

func TestPacerSpacesPasses(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	for _, tc := range []struct {
		name    string
		noPass  bool
		took    time.Duration // the last pass's duration, ending at t0
		after   time.Duration // when the change comes, after t0
		want    time.Duration
		crowded bool
		members int
	}{
		{"first change, no pass yet", true, 0, 0, 0, false, 0},
		{"small mesh: a fast pass, no gap", false, 200 * time.Microsecond, ms, 1 * ms, false, 0},
		{"fast pass, change after the gap", false, 200 * time.Microsecond, 3 * ms, 0, false, 0},
		{"slow pass: ten times its length", false, 50 * ms, 100 * ms, 400 * ms, false, 0},
		{"slow pass, change after the gap", false, 50 * ms, 600 * ms, 0, false, 0},
		{"very slow pass: capped", false, 1 * time.Second, 0, maxGap, false, 0},
		{"very slow pass, capped gap over", false, 1 * time.Second, 2 * time.Second, 0, false, 0},
		{"1000 members: the same cap", false, 3 * time.Second, 0, maxGap, false, 1000},
		{"crowded, 200 members: the same cap", false, 3 * time.Second, 0, maxGap, true, 200},
		{"crowded, 1000 members: five caps", false, 3 * time.Second, 0, 5 * maxGap, true, 1000},
		{"crowded, 200 members, fast pass: its own gap", false, 50 * ms, 0, 500 * ms, true, 200},
		{"crowded, 1000 members, fast pass: five caps all the same", false, 50 * ms, 0, 5 * maxGap, true, 1000},
		{"crowded, 1000 members, change late in the gap", false, 50 * ms, 9 * time.Second, time.Second, true, 1000},
		{"crowded, 399 members: one cap at most", false, 50 * ms, 0, 500 * ms, true, 399},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pacer{}
			if tc.crowded {
				p.perMembers = crowdedMembers
			}
			if !tc.noPass {
				p.passed(t0.Add(-tc.took), t0, tc.members)
			}
			if got := p.wait(t0.Add(tc.after)); got != tc.want {
				t.Errorf("wait %v, want %v", got, tc.want)
			}
		})
	}
}
