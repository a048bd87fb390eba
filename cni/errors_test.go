package cni_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// Issue 5, test 8: the plugin binary, exec'd directly as a runtime would,
// answers bad input with the CNI spec's error codes as JSON on stdout and
// a non-zero exit (SPEC.md, "Error": 1 incompatible version, 4 invalid
// environment variables, 6 decoding failure, 7 invalid network config,
// 11 try again later).
func TestBadInputsErrorCodes(t *testing.T) {
	if weftBin == "" {
		t.Skip("needs the weft binary, built in TestMain only as root and without -short")
	}
	dir := t.TempDir()
	noAgent := filepath.Join(dir, "no-agent.sock")
	conf := func(version string, extra string) string {
		return `{"cniVersion":"` + version + `","name":"weft","type":"weft","agentSocket":"` + noAgent + `","dataDir":"` + dir + `/store"` + extra + `}`
	}
	env := func(cmd string, drop ...string) []string {
		all := map[string]string{
			"CNI_COMMAND": cmd, "CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/var/run/netns/weft-does-not-exist",
			"CNI_IFNAME": "eth0", "CNI_PATH": filepath.Dir(weftBin),
		}
		var out []string
		for k, v := range all {
			if !slices.Contains(drop, k) {
				out = append(out, k+"="+v)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		env   []string
		stdin string
		code  uint
	}{
		{"malformed stdin", env("ADD"), `{"cniVersion":"1.1.0","name":`, types.ErrDecodingFailure},
		{"not JSON at all", env("ADD"), "weft please", types.ErrDecodingFailure},
		{"unknown cniVersion", env("ADD"), conf("9.9.9", ""), types.ErrIncompatibleCNIVersion},
		{"missing CNI_NETNS", env("ADD", "CNI_NETNS"), conf("1.1.0", ""), types.ErrInvalidEnvironmentVariables},
		{"missing CNI_IFNAME", env("ADD", "CNI_IFNAME"), conf("1.1.0", ""), types.ErrInvalidEnvironmentVariables},
		{"missing CNI_CONTAINERID", env("DEL", "CNI_CONTAINERID"), conf("1.1.0", ""), types.ErrInvalidEnvironmentVariables},
		{"unknown CNI_COMMAND", env("FROB"), conf("1.1.0", ""), types.ErrInvalidEnvironmentVariables},
		{"missing network name", env("ADD"), `{"cniVersion":"1.1.0","type":"weft"}`, types.ErrInvalidNetworkConfig},
		{"relative dataDir", env("ADD"), conf("1.1.0", `,"dataDir":"relative/dir"`), types.ErrInvalidNetworkConfig},
		{"absurd mtu", env("ADD"), conf("1.1.0", `,"mtu":17`), types.ErrInvalidNetworkConfig},
		{"STATUS on a 1.0.0 config", env("STATUS"), conf("1.0.0", ""), types.ErrIncompatibleCNIVersion},
		{"GC on a 1.0.0 config", env("GC"), conf("1.0.0", ""), types.ErrIncompatibleCNIVersion},
		{"ADD without an agent", env("ADD"), conf("1.1.0", ""), types.ErrTryAgainLater},
		{"STATUS without an agent", env("STATUS"), conf("1.1.0", ""), types.ErrPluginNotAvailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, code, err := execPlugin(t, tc.env, tc.stdin)
			if err == nil {
				t.Fatalf("exit 0, want an error; stdout %s", stdout)
			}
			var e types.Error
			if jerr := json.Unmarshal(stdout, &e); jerr != nil {
				t.Fatalf("stdout is not a JSON error (%v): %q", jerr, stdout)
			}
			if e.Code != tc.code || code == 0 {
				t.Errorf("code %d (exit %d), want %d: %s %s", e.Code, code, tc.code, e.Msg, e.Details)
			}
		})
	}
	if got, _ := os.ReadDir(dir); len(got) != 0 {
		t.Errorf("failed calls left files: %v", got)
	}

	t.Run("VERSION", func(t *testing.T) {
		stdout, _, err := execPlugin(t, []string{"CNI_COMMAND=VERSION"}, "")
		if err != nil {
			t.Fatalf("VERSION: %v: %s", err, stdout)
		}
		var v struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal(stdout, &v); err != nil {
			t.Fatalf("VERSION output %q: %v", stdout, err)
		}
		for _, want := range []string{"1.0.0", "1.1.0"} {
			if !slices.Contains(v.SupportedVersions, want) {
				t.Errorf("VERSION supportedVersions %v lacks %s", v.SupportedVersions, want)
			}
		}
	})
}

// execPlugin runs the weft binary with exactly env and stdin, as a runtime
// execs a plugin, and returns stdout and the exit code.
func execPlugin(t *testing.T, env []string, stdin string) ([]byte, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, weftBin)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	err := cmd.Run()
	return stdout.Bytes(), cmd.ProcessState.ExitCode(), err
}
