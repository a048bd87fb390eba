package membership

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// OnProbe runs after the member's own probes of another member (about one
// a probe interval), and not while it is alone.
func TestOnProbeFollowsProbes(t *testing.T) {
	key, err := GenerateGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	var probes [2]atomic.Int32
	var ms [2]*Membership
	for i, name := range []string{"probe-a", "probe-b"} {
		m, err := Start(Config{
			NodeName: name, Bind: netip.MustParseAddrPort("127.0.0.1:0"), Keys: [][]byte{key},
			Profile: "local", Tags: sampleHostTags(), OnProbe: func() { probes[i].Add(1) },
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		ms[i] = m
	}
	time.Sleep(2500 * time.Millisecond) // two probe intervals, alone
	if n := probes[0].Load(); n != 0 {
		t.Fatalf("OnProbe ran %d times while the member was alone", n)
	}
	if _, err := ms[1].Join([]string{ms[0].LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "three probes each way", func() error {
		for i := range probes {
			if n := probes[i].Load(); n < 3 {
				return fmt.Errorf("member %d: OnProbe ran %d times", i, n)
			}
		}
		return nil
	})
}
