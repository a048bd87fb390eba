package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/plan"
)

func TestRejoinAddrs(t *testing.T) {
	m := func(name string, st plan.Status, port uint16) plan.Member {
		return plan.Member{Name: name, Status: st, Addr: netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), port)}
	}
	members := []plan.Member{
		m("a", plan.StatusAlive, 1), m("b", plan.StatusFailed, 2), m("self", plan.StatusAlive, 3), m("c", plan.StatusLeft, 4),
		{Name: "noaddr", Status: plan.StatusAlive},
	}
	for i := range 10 {
		members = append(members, m(fmt.Sprintf("n%d", i), plan.StatusAlive, uint16(10+i)))
	}
	got := rejoinAddrs("self", members)
	want := []string{"198.18.0.1:1"}
	for i := range rejoinKeep - 1 {
		want = append(want, fmt.Sprintf("198.18.0.1:%d", 10+i))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rejoinAddrs = %v, want %v (alive, not self, with an address, at most %d, in order)", got, want, rejoinKeep)
	}
}

func TestDecodeRejoin(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
		err      string
	}{
		{"ok", `{"version":1,"node":"n1","addrs":["198.18.0.2:7946","[fd00::1]:7946"]}`, []string{"198.18.0.2:7946", "[fd00::1]:7946"}, ""},
		{"duplicates dropped", `{"version":1,"node":"n1","addrs":["198.18.0.2:7946","198.18.0.2:7946"]}`, []string{"198.18.0.2:7946"}, ""},
		{"empty", `{"version":1,"node":"n1"}`, nil, ""},
		{"another node", `{"version":1,"node":"n2","addrs":["198.18.0.2:7946"]}`, nil, "does not match"},
		{"another version", `{"version":2,"node":"n1","addrs":[]}`, nil, "does not match"},
		{"not json", `{"version":1,`, nil, "not valid JSON"},
		{"no port", `{"version":1,"node":"n1","addrs":["198.18.0.2"]}`, nil, "198.18.0.2"},
		{"a name", `{"version":1,"node":"n1","addrs":["node-a:7946"]}`, nil, "node-a"},
		{"too large", `{"version":1,"node":"n1","addrs":["` + strings.Repeat("1", maxRejoinFile) + `"]}`, nil, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeRejoin([]byte(tc.in), "n1")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func FuzzDecodeRejoin(f *testing.F) {
	f.Add([]byte(`{"version":1,"node":"n1","addrs":["198.18.0.2:7946"]}`))
	f.Add([]byte(`{"version":1,"node":"n1","addrs":["[::1]:1","1.2.3.4:0"]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		addrs, err := decodeRejoin(b, "n1")
		if err != nil {
			return
		}
		if len(addrs) > rejoinKeep {
			t.Fatalf("%d addresses, at most %d", len(addrs), rejoinKeep)
		}
		for _, a := range addrs {
			if _, err := netip.ParseAddrPort(a); err != nil {
				t.Fatalf("kept %q: %v", a, err)
			}
		}
	})
}

// A restarted agent whose join address is gone rejoins through the members
// it kept (rejoin.json), and removes the Serf snapshot of earlier versions.
func TestRestartRejoinsKeptMembers(t *testing.T) {
	s := newSim(t, plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/21"), BlockBits: 24, TTL: 10 * time.Minute})
	s.profile = "local"
	all := []string{"a", "b", "c"}
	for _, n := range all {
		s.start(n, 0, n == "a") // a leaves when stopped
	}
	waitUntil(t, time.Minute, "mesh", func() error { return s.settled(all) })
	kept := filepath.Join(s.dir, "c", rejoinFile)
	waitUntil(t, 30*time.Second, "c keeps a and b", func() error {
		addrs, err := loadRejoin(kept, "c")
		if err != nil || len(addrs) != 2 {
			return fmt.Errorf("c keeps %v (%v)", addrs, err)
		}
		return nil
	})
	snapshot := filepath.Join(s.dir, "c", oldSnapshotFile)
	if err := os.WriteFile(snapshot, []byte("alive: x 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// c crashes, then a (the seed, c's only join address) leaves for good.
	s.stop("c")
	s.stop("a")
	s.start("c", 0, false) // joins the seed, a's address: nobody there
	waitUntil(t, time.Minute, "c back with b", func() error { return s.settled([]string{"b", "c"}) })
	if _, err := os.Stat(snapshot); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old Serf snapshot is still there: %v", err)
	}
}

// A list that is not full is written at every change; a full one at most
// once a rejoinEvery, so that a forming mesh does not sync the disk at
// every pass.
func TestKeepRejoinWrites(t *testing.T) {
	a := &Agent{cfg: Config{NodeName: "self", StateDir: t.TempDir()}, log: simLogger()}
	members := func(n, first int) []plan.Member {
		var out []plan.Member
		for i := range n {
			out = append(out, plan.Member{Name: fmt.Sprintf("m%02d", first+i), Status: plan.StatusAlive, Addr: netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), uint16(first+i))})
		}
		return out
	}
	onDisk := func() []string {
		t.Helper()
		addrs, err := loadRejoin(a.rejoinPath(), "self")
		if err != nil {
			t.Fatal(err)
		}
		return addrs
	}
	t0 := time.Unix(1000, 0)
	a.keepRejoin(members(2, 10), t0)
	a.keepRejoin(members(3, 10), t0.Add(time.Second))
	if got := onDisk(); len(got) != 3 {
		t.Fatalf("a list not full yet: %v on disk, want the 3 members", got)
	}
	a.keepRejoin(members(20, 10), t0.Add(2*time.Second))
	full := onDisk()
	if len(full) != rejoinKeep {
		t.Fatalf("%v on disk, want %d members", full, rejoinKeep)
	}
	a.keepRejoin(members(20, 5), t0.Add(3*time.Second))
	if got := onDisk(); !slices.Equal(got, full) {
		t.Fatalf("a full list rewritten after 1 s: %v", got)
	}
	a.keepRejoin(members(20, 5), t0.Add(2*time.Second+rejoinEvery))
	if got := onDisk(); slices.Equal(got, full) || got[0] != "198.18.0.1:5" {
		t.Fatalf("a full list not rewritten after rejoinEvery: %v", got)
	}
	a.keepRejoin(nil, t0.Add(time.Hour))
	if got := onDisk(); len(got) != rejoinKeep {
		t.Fatalf("alone, the list was dropped: %v", got)
	}
}
