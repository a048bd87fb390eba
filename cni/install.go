package cni

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/internal/atomicfile"
)

// Names of what install writes.
const (
	ConflistName = "10-weft.conflist"
	BinaryName   = "weft"
	// NetworkName is the conflist's network name.
	NetworkName = "weft"
	// ManagedKey marks a conflist as written by weft; install overwrites
	// and uninstall removes only conflists that carry it.
	ManagedKey = "weft.managed"
)

// InstallConfig says where to install and what to chain.
type InstallConfig struct {
	ConfDir, BinDir string
	// Executable is the binary to copy to BinDir/weft.
	Executable  string
	AgentSocket string
	DataDir     string
	// Chain names plugins run after weft, e.g. portmap, bandwidth.
	Chain []string
	// CNIVersion of the conflist; "" picks the newest every chained
	// plugin found in BinDir speaks (Debian's speak up to 1.0.0).
	CNIVersion string
}

// InstallReport is what Install did.
type InstallReport struct {
	Wrote      []string
	Warnings   []string
	CNIVersion string
}

// managed is the ManagedKey object: enough for uninstall to remove the
// binary only if it is still the one install wrote.
type managed struct {
	By           string `json:"by"`
	Binary       string `json:"binary"`
	BinarySHA256 string `json:"binarySHA256"`
}

// chainEntries are the conflist entries of well-known chained plugins; the
// capabilities let the runtime pass hostPort and bandwidth settings.
var chainEntries = map[string]map[string]any{
	"portmap":   {"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
	"bandwidth": {"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
}

// Install writes BinDir/weft (a copy of Executable) and ConfDir/10-weft.conflist,
// each atomically, binary first so a runtime never sees a conflist naming a
// plugin that is not there. It refuses to overwrite files weft did not write.
func Install(cfg InstallConfig) (InstallReport, error) {
	var rep InstallReport
	if cfg.AgentSocket == "" {
		cfg.AgentSocket = DefaultAgentSocket
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	confPath := filepath.Join(cfg.ConfDir, ConflistName)
	binPath := filepath.Join(cfg.BinDir, BinaryName)
	old, oldManaged, err := readManaged(confPath)
	if err != nil {
		return rep, err
	}
	if old && oldManaged == nil {
		return rep, fmt.Errorf("install: %s exists and was not written by weft (no %q key); remove it yourself", confPath, ManagedKey)
	}
	bin, err := os.ReadFile(cfg.Executable)
	if err != nil {
		return rep, fmt.Errorf("install: read executable: %w", err)
	}
	sum := sha256Hex(bin)
	if cur, err := fileSHA256(binPath); err == nil && cur != sum && (oldManaged == nil || cur != oldManaged.BinarySHA256) {
		return rep, fmt.Errorf("install: %s exists and is not a weft binary this install wrote; remove it yourself", binPath)
	}
	for _, name := range cfg.Chain {
		if name == "" || name == BinaryName || strings.ContainsAny(name, "/ ") {
			return rep, fmt.Errorf("install: chain plugin %q: want a plugin name such as portmap", name)
		}
	}
	if cfg.CNIVersion != "" && !slices.Contains(version.All.SupportedVersions(), cfg.CNIVersion) {
		return rep, fmt.Errorf("install: cniVersion %q: weft speaks %s", cfg.CNIVersion, strings.Join(version.All.SupportedVersions(), ", "))
	}
	rep.CNIVersion = cfg.CNIVersion
	if rep.CNIVersion == "" {
		rep.CNIVersion, rep.Warnings = pickVersion(cfg.BinDir, cfg.Chain)
	}

	if err := os.MkdirAll(cfg.BinDir, 0o755); err != nil {
		return rep, fmt.Errorf("install: %w", err)
	}
	if err := atomicfile.Write(binPath, bin, 0o755); err != nil {
		return rep, fmt.Errorf("install: %w", err)
	}
	rep.Wrote = append(rep.Wrote, binPath)

	plugins := []map[string]any{{"type": BinaryName, "agentSocket": cfg.AgentSocket, "dataDir": cfg.DataDir}}
	for _, name := range cfg.Chain {
		e, ok := chainEntries[name]
		if !ok {
			e = map[string]any{"type": name}
		}
		plugins = append(plugins, e)
	}
	list := map[string]any{
		"cniVersion": rep.CNIVersion,
		"name":       NetworkName,
		ManagedKey:   managed{By: "weft", Binary: binPath, BinarySHA256: sum},
		"plugins":    plugins,
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return rep, err
	}
	data = append(data, '\n')
	// A conflist libcni cannot load would take the node's network down.
	if _, err := libcni.NetworkConfFromBytes(data); err != nil {
		return rep, fmt.Errorf("install: generated conflist does not load: %w", err)
	}
	if err := os.MkdirAll(cfg.ConfDir, 0o755); err != nil {
		return rep, fmt.Errorf("install: %w", err)
	}
	if err := atomicfile.Write(confPath, data, 0o644); err != nil {
		return rep, fmt.Errorf("install: %w", err)
	}
	rep.Wrote = append(rep.Wrote, confPath)
	rep.Warnings = append(rep.Warnings, otherConfigs(cfg.ConfDir)...)
	return rep, nil
}

// pickVersion asks each chained plugin in binDir which spec versions it
// speaks and returns the newest all of them (and weft) share.
func pickVersion(binDir string, chain []string) (string, []string) {
	candidates := []string{"1.1.0", "1.0.0", "0.4.0"}
	var warnings []string
	c := libcni.NewCNIConfig([]string{binDir}, nil)
	for _, name := range chain {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := c.GetVersionInfo(ctx, name)
		cancel()
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("chained plugin %s: not usable in %s (%v); assuming it speaks CNI 1.0.0", name, binDir, err))
			candidates = slices.DeleteFunc(candidates, func(v string) bool { return v == "1.1.0" })
			continue
		}
		speaks := info.SupportedVersions()
		candidates = slices.DeleteFunc(candidates, func(v string) bool { return !slices.Contains(speaks, v) })
	}
	if len(candidates) == 0 {
		warnings = append(warnings, "chained plugins share no CNI version with weft; writing 1.0.0")
		return "1.0.0", warnings
	}
	return candidates[0], warnings
}

// otherConfigs warns about CNI configs weft did not write: a runtime uses
// only the first in lexical order.
func otherConfigs(dir string) []string {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil
	}
	sort.Strings(files)
	var out []string
	for _, f := range files {
		if filepath.Base(f) == ConflistName {
			continue
		}
		where := "after"
		if filepath.Base(f) < ConflistName {
			where = "before"
		}
		out = append(out, fmt.Sprintf("another CNI config %s sorts %s %s; a runtime uses only the first", f, where, ConflistName))
	}
	return out
}

// readManaged reports whether path exists and, if weft wrote it, its mark.
func readManaged(path string) (exists bool, m *managed, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal(data, &doc) != nil {
		return true, nil, nil
	}
	raw, ok := doc[ManagedKey]
	if !ok {
		return true, nil, nil
	}
	m = &managed{}
	if json.Unmarshal(raw, m) != nil || m.By != "weft" {
		return true, nil, nil
	}
	return true, m, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// UninstallConfig says what to remove. Uninstall works in the network
// namespace it runs in.
type UninstallConfig struct {
	ConfDir, BinDir string
	// DataDir is the address store; the conflist's dataDir wins if the
	// conflist is still there.
	DataDir string
	// Interface is the agent's WireGuard link.
	Interface string
	// Executable is the running binary: BinDir/weft is also removed when
	// it is byte-identical to it and no conflist records its hash.
	Executable string
	// StateDir, when set, is the agent's state directory: its state.json
	// (WireGuard key, lease), rejoin.json, an old serf.snapshot and
	// leftover temp files go.
	StateDir string
	// Socket, when set, is the agent's local API socket: it goes.
	Socket string
	// UAPIDir, when set, is where a userspace device's UAPI socket
	// (<Interface>.sock) lives: it goes.
	UAPIDir string
}

// agentStateFiles are the files the agent writes in its state directory
// (agent/agent.go statePath, agent/rejoin.go rejoinFile; serf.snapshot of
// earlier versions).
var agentStateFiles = []string{"state.json", "rejoin.json", "serf.snapshot"}

// Uninstall removes exactly what weft created and returns one line per
// thing removed (or kept, and why). Running it twice is fine.
func Uninstall(cfg UninstallConfig) ([]string, error) {
	var r removal
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	m := r.conflist(filepath.Join(cfg.ConfDir, ConflistName), &cfg)
	r.binary(filepath.Join(cfg.BinDir, BinaryName), m, cfg.Executable)
	r.links(cfg.Interface)
	r.add(removeStore(cfg.DataDir))
	lines, err := removeAgentFiles(cfg)
	r.done = append(r.done, lines...)
	if err != nil {
		r.errs = append(r.errs, err)
	}
	if len(r.done) == 0 {
		r.done = append(r.done, "nothing of weft's left to remove")
	}
	return r.done, errors.Join(r.errs...)
}

// removal is what Uninstall has done so far: a line per thing removed or
// kept, and the errors.
type removal struct {
	done []string
	errs []error
}

// add records line when err is nil (and line is not empty), err otherwise.
func (r *removal) add(line string, err error) {
	switch {
	case err != nil:
		r.errs = append(r.errs, err)
	case line != "":
		r.done = append(r.done, line)
	}
}

// conflist removes weft's conflist at confPath, taking the data directory
// it names into cfg, and returns what weft recorded in it (nil if none).
func (r *removal) conflist(confPath string, cfg *UninstallConfig) *managed {
	exists, m, err := readManaged(confPath)
	switch {
	case err != nil:
		r.errs = append(r.errs, err)
	case exists && m == nil:
		r.done = append(r.done, "kept conflist "+confPath+": not written by weft")
	case exists:
		if d := conflistDataDir(confPath); d != "" {
			cfg.DataDir = d
		}
		r.add("removed conflist "+confPath, os.Remove(confPath))
	}
	return m
}

// binary removes the plugin binary at binPath if it is the one weft
// installed: the hash the conflist recorded, or the running executable's.
func (r *removal) binary(binPath string, m *managed, executable string) {
	cur, err := fileSHA256(binPath)
	if err != nil {
		return
	}
	ours := m != nil && m.BinarySHA256 == cur
	if !ours && executable != "" {
		self, err := fileSHA256(executable)
		ours = err == nil && self == cur
	}
	if !ours {
		r.done = append(r.done, "kept binary "+binPath+": not the one weft installed")
		return
	}
	r.add("removed binary "+binPath, os.Remove(binPath))
}

// links deletes the host ends of pods' veths (named HostVethPrefix... and
// carrying weft's alias) and the tunnel interface iface, with their
// routes.
func (r *removal) links(iface string) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		a := l.Attrs()
		att, ok := parseAlias(a.Alias)
		isVeth := l.Type() == "veth"
		isTunnel := a.Name == iface && (l.Type() == "wireguard" || l.Type() == "tuntap")
		if !(ok && isVeth && strings.HasPrefix(a.Name, HostVethPrefix)) && !isTunnel {
			continue
		}
		routes, _ := netlinksafe.RouteList(l, netlink.FAMILY_V4)
		if err := netlink.LinkDel(l); err != nil {
			r.errs = append(r.errs, fmt.Errorf("delete %s: %w", a.Name, err))
			continue
		}
		if isTunnel {
			r.done = append(r.done, fmt.Sprintf("removed link %s (%s)", a.Name, l.Type()))
		} else {
			r.done = append(r.done, fmt.Sprintf("removed veth %s (pod %s %s)", a.Name, att.ContainerID, att.IfName))
		}
		for _, rt := range routes {
			if rt.Dst != nil && rt.Dst.IP.IsGlobalUnicast() {
				r.done = append(r.done, fmt.Sprintf("removed route %s dev %s", rt.Dst, a.Name))
			}
		}
	}
}

// conflistDataDir is the dataDir of the weft entry of a conflist.
func conflistDataDir(path string) string {
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		return ""
	}
	for _, p := range list.Plugins {
		if p.Network.Type == BinaryName {
			if c, err := ParseNetConf(injectName(p.Bytes)); err == nil {
				return c.DataDir
			}
		}
	}
	return ""
}

func injectName(b []byte) []byte {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return b
	}
	m["name"] = NetworkName
	out, _ := json.Marshal(m)
	return out
}

// removeStore removes the files of the address store weft writes (address
// files, host-local's lock and last_reserved_ip.*), then the directory if
// nothing else is in it.
func removeStore(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	n, addrs := 0, 0
	var kept []string
	for _, e := range ents {
		name := e.Name()
		isAddr := isAddrName(name)
		if !e.Type().IsRegular() || !(isAddr || name == "lock" || strings.HasPrefix(name, "last_reserved_ip.")) {
			kept = append(kept, name)
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return "", err
		}
		n++
		if isAddr {
			addrs++
		}
	}
	if len(kept) > 0 {
		return fmt.Sprintf("emptied address store %s (%d allocations); kept it for files weft did not write: %s", dir, addrs, strings.Join(kept, ", ")), nil
	}
	if err := os.Remove(dir); err != nil {
		return "", err
	}
	return fmt.Sprintf("removed address store %s (%d allocations)", dir, addrs), nil
}

// removeAgentFiles removes the agent's state files, its socket and the
// device's UAPI socket, by name: the directories are hostPath mounts (or
// shared with others) and stay.
func removeAgentFiles(cfg UninstallConfig) ([]string, error) {
	var paths []string
	if cfg.StateDir != "" {
		for _, n := range agentStateFiles {
			paths = append(paths, filepath.Join(cfg.StateDir, n))
		}
		// atomicfile's temp files of those, left by a crash mid-write.
		for _, n := range agentStateFiles {
			tmps, _ := filepath.Glob(filepath.Join(cfg.StateDir, "."+n+".tmp-*"))
			paths = append(paths, tmps...)
		}
	}
	if cfg.Socket != "" {
		paths = append(paths, cfg.Socket, api.HandoverPath(cfg.Socket))
	}
	if cfg.UAPIDir != "" && cfg.Interface != "" {
		paths = append(paths, filepath.Join(cfg.UAPIDir, cfg.Interface+".sock"))
	}
	var done []string
	var errs []error
	for _, p := range paths {
		err := os.Remove(p)
		switch {
		case err == nil:
			done = append(done, "removed "+p)
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, err)
		}
	}
	return done, errors.Join(errs...)
}
