package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/internal/atomicfile"
)

// A restarted agent rejoins the members it knew, also when its join
// addresses are gone: it keeps the gossip addresses of a few alive members
// in rejoin.json next to its state, rewritten when they change. Serf's
// snapshot did this before, but its clock ticker woke every idle agent
// twice a second, and each wakeup of an idle agent costs ~0.15 ms of CPU
// on the benchmark machine: a seventh of an idle agent's wakeups, for a
// file read once per restart.

// rejoinFile is the file in the state directory.
const rejoinFile = "rejoin.json"

// oldSnapshotFile is Serf's snapshot that earlier versions kept in the
// state directory: removed at start, stale state once nothing reads it.
const oldSnapshotFile = "serf.snapshot"

// rejoinKeep is how many addresses are kept: one reachable member is
// enough to rejoin.
const rejoinKeep = 8

// maxRejoinFile bounds what loadRejoin reads.
const maxRejoinFile = 64 << 10

type rejoinList struct {
	Version  int      `json:"version"`
	NodeName string   `json:"node"`
	Addrs    []string `json:"addrs"`
}

// rejoinAddrs picks the addresses to keep: the alive members but self,
// in name order (so the list changes only when one of them does), at most
// rejoinKeep.
func rejoinAddrs(self string, members []plan.Member) []string {
	var out []string
	for _, m := range members {
		if len(out) == rejoinKeep {
			break
		}
		if m.Name != self && m.Status == plan.StatusAlive && m.Addr.IsValid() {
			out = append(out, m.Addr.String())
		}
	}
	return out
}

// loadRejoin reads the kept addresses; a missing file is no addresses.
// A file of another node (a reused disk) is not used.
func loadRejoin(path, nodeName string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rejoin list: %w", err)
	}
	return decodeRejoin(b, nodeName)
}

func decodeRejoin(b []byte, nodeName string) ([]string, error) {
	if len(b) > maxRejoinFile {
		return nil, fmt.Errorf("rejoin list: %d bytes, at most %d", len(b), maxRejoinFile)
	}
	var l rejoinList
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("rejoin list: not valid JSON: %w", err)
	}
	if l.Version != 1 || l.NodeName != nodeName {
		return nil, fmt.Errorf("rejoin list: %w: version %d of node %q", ErrStateMismatch, l.Version, l.NodeName)
	}
	var out []string
	for _, a := range l.Addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return nil, fmt.Errorf("rejoin list: %q: %w", a, err)
		}
		if a = ap.String(); !slices.Contains(out, a) && len(out) < rejoinKeep {
			out = append(out, a)
		}
	}
	return out, nil
}

// saveRejoin writes the kept addresses atomically.
func saveRejoin(path, nodeName string, addrs []string) error {
	b, err := json.Marshal(rejoinList{Version: 1, NodeName: nodeName, Addrs: addrs})
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}

func (a *Agent) rejoinPath() string { return filepath.Join(a.cfg.StateDir, rejoinFile) }

// loadRejoin reads the kept addresses at start and removes the snapshot
// of earlier versions. An ephemeral agent keeps none.
func (a *Agent) loadRejoin() {
	if a.cfg.Ephemeral {
		return
	}
	if err := os.Remove(filepath.Join(a.cfg.StateDir, oldSnapshotFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("removing the Serf snapshot of an earlier version", "err", err)
	}
	addrs, err := loadRejoin(a.rejoinPath(), a.cfg.NodeName)
	if err != nil {
		a.log.Warn("ignoring the rejoin list", "err", err)
		return
	}
	a.rejoin.addrs = addrs
}

// rejoinEvery is the least time between two writes of a full rejoin list:
// while a large mesh forms, the first members by name change with every
// pass, and each write syncs the disk. A list that is not full yet is
// written at every change.
const rejoinEvery = time.Minute

// keepRejoin rewrites the rejoin list when the members it would hold
// changed. An agent left alone keeps the old list: that is when it needs it.
func (a *Agent) keepRejoin(members []plan.Member, now time.Time) {
	if a.cfg.Ephemeral || len(a.rejoin.addrs) == rejoinKeep && now.Sub(a.rejoin.saved) < rejoinEvery {
		return
	}
	addrs := rejoinAddrs(a.cfg.NodeName, members)
	if len(addrs) == 0 || slices.Equal(addrs, a.rejoin.addrs) {
		return
	}
	if err := saveRejoin(a.rejoinPath(), a.cfg.NodeName, addrs); err != nil {
		a.log.Warn("saving the rejoin list", "err", err)
		return
	}
	a.rejoin.addrs, a.rejoin.saved = addrs, now
}

// rejoinKept tries the kept addresses one by one, in the background (a
// member that is gone for good may hold each for memberlist's TCP timeout),
// until one answers; the others come with its member list. One try runs
// at a time.
func (a *Agent) rejoinKept(ctx context.Context) {
	addrs := slices.Clone(a.rejoin.addrs)
	if len(addrs) == 0 || !a.rejoin.running.CompareAndSwap(false, true) {
		return
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		defer a.rejoin.running.Store(false)
		for _, addr := range addrs {
			if ctx.Err() != nil {
				return
			}
			if _, err := a.mem.Join([]string{addr}); err == nil {
				a.log.Info("rejoined the mesh through a kept address", "addr", addr)
				return
			}
		}
		a.log.Info("no kept address answered", "tried", len(addrs))
	}()
}
