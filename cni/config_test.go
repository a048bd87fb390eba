package cni_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/cni"
)

func TestParseNetConf(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want *cni.NetConf // nil: an error with code
		code uint
	}{
		{name: "defaults", in: `{"cniVersion":"1.1.0","name":"weft","type":"weft"}`,
			want: &cni.NetConf{AgentSocket: cni.DefaultAgentSocket, DataDir: cni.DefaultDataDir}},
		{name: "all set", in: `{"cniVersion":"1.0.0","name":"weft","type":"weft","agentSocket":"/s.sock","dataDir":"/d/x/","mtu":1400}`,
			want: &cni.NetConf{AgentSocket: "/s.sock", DataDir: "/d/x", MTU: 1400}},
		{name: "broken json", in: `{"name":`, code: types.ErrDecodingFailure},
		{name: "wrong type", in: `{"name":"weft","mtu":"big"}`, code: types.ErrDecodingFailure},
		{name: "no name", in: `{"type":"weft"}`, code: types.ErrInvalidNetworkConfig},
		{name: "relative socket", in: `{"name":"weft","agentSocket":"agent.sock"}`, code: types.ErrInvalidNetworkConfig},
		{name: "root data dir", in: `{"name":"weft","dataDir":"/"}`, code: types.ErrInvalidNetworkConfig},
		{name: "tiny mtu", in: `{"name":"weft","mtu":100}`, code: types.ErrInvalidNetworkConfig},
		{name: "negative mtu", in: `{"name":"weft","mtu":-1}`, code: types.ErrInvalidNetworkConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cni.ParseNetConf([]byte(tc.in))
			if tc.want == nil {
				var e *types.Error
				if !errors.As(err, &e) || e.Code != tc.code {
					t.Fatalf("err %v, want code %d", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			g := cni.NetConf{AgentSocket: got.AgentSocket, DataDir: got.DataDir, MTU: got.MTU}
			if d := cmp.Diff(*tc.want, g); d != "" {
				t.Errorf("-want +got:\n%s", d)
			}
		})
	}
}

// FuzzParseNetConf: whatever the runtime pipes in, the parser neither
// panics nor accepts a config the plugin could misuse, and every
// rejection is a spec error with the decoding or invalid-config code.
func FuzzParseNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"weft","type":"weft"}`,
		`{"cniVersion":"1.0.0","name":"weft","type":"weft","agentSocket":"/run/weft/agent.sock","dataDir":"/var/lib/cni/networks/weft","mtu":1420}`,
		`{"name":"weft","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"100.64.3.5/32"}]}}`,
		`{"name":"weft","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"name":"weft","mtu":1e9}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := cni.ParseNetConf(data)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || (e.Code != types.ErrDecodingFailure && e.Code != types.ErrInvalidNetworkConfig) {
				t.Fatalf("error %v is not a decoding/invalid-config CNI error", err)
			}
			return
		}
		switch {
		case c.Name == "":
			t.Fatal("accepted a config without a name")
		case !filepath.IsAbs(c.AgentSocket) || !filepath.IsAbs(c.DataDir):
			t.Fatalf("accepted relative paths %q %q", c.AgentSocket, c.DataDir)
		case c.DataDir == "/" || c.DataDir != filepath.Clean(c.DataDir):
			t.Fatalf("accepted data dir %q", c.DataDir)
		case strings.ContainsRune(c.AgentSocket+c.DataDir, 0):
			t.Fatal("accepted a NUL in a path")
		case c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535):
			t.Fatalf("accepted mtu %d", c.MTU)
		}
	})
}
