package cni_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/weftnet/weft/cni"
)

// Issue 5, test 7: `weft cni install` into scratch conf and bin dirs that
// also hold another vendor's conflist and plugin, a pod through the
// installed conflist and binary, then `weft cni uninstall` (in the node's
// namespace): the vendor's files are byte-identical with the same mtime,
// everything weft made is gone and reported, and a second uninstall is a
// no-op that succeeds. Install refuses to overwrite a 10-weft.conflist it
// did not write.
func TestInstallUninstall(t *testing.T) {
	nd := newLab(t, 1, 1)[0]
	confDir, binDir := t.TempDir(), t.TempDir()
	vendorConf := filepath.Join(confDir, "05-vendor.conflist")
	vendorData := []byte(`{"cniVersion":"1.0.0","name":"vendor","plugins":[{"type":"vendor"}]}` + "\n")
	if err := os.WriteFile(vendorConf, vendorData, 0o644); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	os.Chtimes(vendorConf, past, past)
	if err := os.Symlink(filepath.Join(debianCNIDir, "portmap"), filepath.Join(binDir, "portmap")); err != nil {
		t.Fatal(err)
	}

	out, stderr, err := runWeft(t, nil, "cni", "install", "--conf-dir", confDir, "--bin-dir", binDir,
		"--socket", nd.agent.Socket(), "--data-dir", nd.dataDir, "--chain", "portmap")
	if err != nil {
		t.Fatalf("install: %v\n%s%s", err, out, stderr)
	}
	if !strings.Contains(stderr, "05-vendor.conflist") {
		t.Errorf("install did not warn about the other conflist: %q", stderr)
	}
	confPath := filepath.Join(confDir, cni.ConflistName)
	list, err := libcni.ConfListFromFile(confPath)
	if err != nil {
		t.Fatalf("installed conflist does not load: %v", err)
	}
	// Debian's portmap speaks CNI up to 1.0.0; install asked it.
	if list.CNIVersion != "1.0.0" || len(list.Plugins) != 2 || list.Plugins[1].Network.Type != "portmap" {
		t.Errorf("conflist: version %s, %d plugins; want 1.0.0 with weft then portmap:\n%s", list.CNIVersion, len(list.Plugins), list.Bytes)
	}
	var doc map[string]json.RawMessage
	json.Unmarshal(list.Bytes, &doc)
	if _, ok := doc[cni.ManagedKey]; !ok {
		t.Errorf("conflist lacks %q", cni.ManagedKey)
	}

	// A pod through what install wrote, as the runtime would run it.
	rt := newCNIConfig([]string{binDir}, t.TempDir())
	p := nd.newPodNS("p1")
	var addr string
	err = nd.do(func(ctx context.Context) error {
		r, err := rt.AddNetworkList(ctx, list, p.rt)
		if err == nil {
			b, _ := json.Marshal(r)
			addr = string(b)
		}
		return err
	})
	if err != nil {
		t.Fatalf("ADD through the installed plugin: %v", err)
	}
	hostVeth := cni.HostVethName(p.rt.ContainerID, p.rt.IfName)
	if !nd.linkExists(hostVeth) {
		t.Fatalf("no host veth %s after ADD (%s)", hostVeth, addr)
	}
	// Killed, the agent leaves its (persistent) device behind, as a kernel
	// WireGuard link always stays: uninstall must remove it.
	nd.agent.Stop(syscall.SIGKILL)
	iface := nd.agent.Interface()
	if !nd.linkExists(iface) {
		t.Fatalf("test setup: %s gone with the killed agent", iface)
	}

	// The agent's own files, as the uninstall DaemonSet removes them.
	stateDir, uapiDir := filepath.Join(nd.agent.Dir, "state"), "/var/run/wireguard"
	agentFiles := []string{filepath.Join(stateDir, "state.json"), nd.agent.Socket(), filepath.Join(uapiDir, iface+".sock")}
	for _, f := range agentFiles {
		if _, err := os.Lstat(f); err != nil {
			t.Fatalf("test setup: the killed agent left no %s: %v", f, err)
		}
	}
	unrelated := filepath.Join(stateDir, "not-weft")
	if err := os.WriteFile(unrelated, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	uninstall := func() string {
		t.Helper()
		out, stderr, err := runWeft(t, nd.ns.Command, "cni", "uninstall", "--conf-dir", confDir, "--bin-dir", binDir,
			"--data-dir", nd.dataDir, "--interface", iface,
			"--state-dir", stateDir, "--socket", nd.agent.Socket(), "--uapi-dir", uapiDir)
		if err != nil {
			t.Fatalf("uninstall: %v\n%s%s", err, out, stderr)
		}
		return out
	}
	out = uninstall()
	t.Logf("uninstall:\n%s", out)
	for _, want := range []string{
		"removed conflist " + confPath,
		"removed binary " + filepath.Join(binDir, cni.BinaryName),
		"removed veth " + hostVeth,
		"removed route ",
		"removed link " + iface,
		"removed address store " + nd.dataDir,
		"removed " + agentFiles[0],
		"removed " + agentFiles[1],
		"removed " + agentFiles[2],
	} {
		if !strings.Contains(out, want) {
			t.Errorf("uninstall did not report %q", want)
		}
	}
	if _, err := os.Stat(unrelated); err != nil {
		t.Errorf("uninstall removed a file weft did not write: %v", err)
	}
	for _, gone := range append([]string{confPath, filepath.Join(binDir, cni.BinaryName), nd.dataDir}, agentFiles...) {
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("%s still there after uninstall", gone)
		}
	}
	if nd.linkExists(hostVeth) || nd.linkExists(iface) {
		t.Errorf("links left after uninstall: veth %v, %s %v", nd.linkExists(hostVeth), iface, nd.linkExists(iface))
	}
	if got, _ := os.ReadFile(vendorConf); !bytes.Equal(got, vendorData) {
		t.Errorf("vendor conflist changed: %q", got)
	}
	if st, err := os.Stat(vendorConf); err != nil || !st.ModTime().Equal(past) {
		t.Errorf("vendor conflist mtime changed: %v %v", st.ModTime(), err)
	}
	if _, err := os.Readlink(filepath.Join(binDir, "portmap")); err != nil {
		t.Errorf("vendor plugin in the bin dir touched: %v", err)
	}
	if out := uninstall(); !strings.Contains(out, "nothing") {
		t.Errorf("second uninstall: %q, want nothing to remove", out)
	}

	// Install never overwrites a 10-weft.conflist it did not write.
	foreign := []byte(`{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"someone-else"}]}`)
	if err := os.WriteFile(confPath, foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runWeft(t, nil, "cni", "install", "--conf-dir", confDir, "--bin-dir", binDir); err == nil {
		t.Errorf("install overwrote a foreign %s", cni.ConflistName)
	}
	if got, _ := os.ReadFile(confPath); !bytes.Equal(got, foreign) {
		t.Errorf("foreign %s changed: %s", cni.ConflistName, got)
	}
	if out := uninstall(); !strings.Contains(out, "kept conflist") {
		t.Errorf("uninstall of a foreign conflist: %q, want it kept", out)
	}
}

// runWeft runs the weft binary with args, in a node when command is a
// netlab Node.Command, and returns stdout and stderr.
func runWeft(t *testing.T, command func(context.Context, string, ...string) *exec.Cmd, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if command != nil {
		cmd = command(ctx, weftBin, args...)
	} else {
		cmd = exec.CommandContext(ctx, weftBin, args...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}
