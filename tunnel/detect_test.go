package tunnel_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/tunnel"
)

func TestDetectOrder(t *testing.T) {
	ok := func() error { return nil }
	noMod := func() error { return errors.New("no module") }
	noTUN := func() error { return errors.New("no tun") }
	for _, tc := range []struct {
		name        string
		kernel, tun func() error
		want        tunnel.Mode
		tried       int
	}{
		{"kernel works", ok, ok, tunnel.ModeKernel, 1},
		{"no kernel module picks tun", noMod, ok, tunnel.ModeTUN, 2},
		{"no module and no TUN picks netstack", noMod, noTUN, tunnel.ModeNetstack, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, tried := tunnel.Detect(tunnel.Probes{Kernel: tc.kernel, TUN: tc.tun})
			if got != tc.want || len(tried) != tc.tried {
				t.Fatalf("Detect = %s after %d attempts, want %s after %d", got, len(tried), tc.want, tc.tried)
			}
			for _, a := range tried[:len(tried)-1] {
				if a.Err == nil {
					t.Errorf("attempt %s has no reason", a.Mode)
				}
			}
		})
	}
}

// Real probes in a lab namespace: this machine has no WireGuard module, so
// detection must fall to tun (where the module exists it must pick kernel).
func TestDetectRealProbes(t *testing.T) {
	lab := newLab(t, 1)
	var mode tunnel.Mode
	var tried []tunnel.Attempt
	lab.Nodes[0].Do(func() error { mode, tried = tunnel.Detect(tunnel.Probes{}); return nil })
	kernelErr := tried[0].Err
	want := tunnel.ModeKernel
	if kernelErr != nil {
		want = tunnel.ModeTUN
		if !errors.Is(kernelErr, tunnel.ErrNoKernelWireGuard) {
			t.Errorf("kernel probe error %v does not wrap ErrNoKernelWireGuard", kernelErr)
		}
	}
	if mode != want {
		t.Fatalf("Detect = %s (attempts %v), want %s", mode, tried, want)
	}
	out, _ := exec.Command("ip", "-n", lab.Nodes[0].NS, "link").CombinedOutput()
	if strings.Contains(string(out), "weftprobe") {
		t.Errorf("probe left a link behind:\n%s", out)
	}
}

// With /dev/net/tun hidden (a private mount namespace with an empty /dev/net)
// the real probes fall through to netstack. The detection runs in a child
// process, since mount namespaces are per process.
func TestDetectWithoutTUN(t *testing.T) {
	if os.Getenv("WEFT_DETECT_CHILD") == "1" {
		mode, tried := tunnel.Detect(tunnel.Probes{})
		os.Stdout.WriteString("mode=" + string(mode) + "\n")
		for _, a := range tried {
			if a.Err != nil {
				os.Stdout.WriteString(string(a.Mode) + ": " + a.Err.Error() + "\n")
			}
		}
		return
	}
	requireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs util-linux unshare to hide /dev/net/tun in a mount namespace")
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--net", "sh", "-c",
		`mount -t tmpfs none /dev/net && exec "$0" -test.run '^TestDetectWithoutTUN$' -test.count=1`, os.Args[0])
	// mount(8) would keep its utab in the machine's /run/mount.
	cmd.Env = append(os.Environ(), "WEFT_DETECT_CHILD=1", "LIBMOUNT_UTAB="+filepath.Join(t.TempDir(), "utab"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "mode=netstack") {
		t.Fatalf("without /dev/net/tun Detect did not pick netstack:\n%s", out)
	}
	if !strings.Contains(string(out), "tun: create TUN") {
		t.Errorf("no reason given for skipping tun:\n%s", out)
	}
}
