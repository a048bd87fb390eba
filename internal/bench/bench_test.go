package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bench"
	"github.com/weftnet/weft/internal/harness/gobuild"
)

// TestBenchJSONEveryMode runs `weft bench --json --duration 2s --streams 1`
// on the lab: the underlay row is there, every mode is either measured
// (gbps and rtt_us above zero) or, for kernel only, reported unavailable
// with the reason; tun is measured pod to pod.
func TestBenchJSONEveryMode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds a namespace lab, runs agents and the CNI plugin")
	}
	if testing.Short() {
		t.Skip("measures every mode for 2 s each; runs without -short")
	}
	bin, err := gobuild.Weft(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, bin, "bench", "--json", "--duration", "2s", "--streams", "1")
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("weft bench: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("progress:\n%s", stderr.String())
	var rep struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("output is not the JSON report: %v\n%s", err, stdout.String())
	}
	seen := map[string]map[string]any{}
	for _, r := range rep.Results {
		for _, k := range []string{"mode", "streams", "gbps", "rtt_us"} {
			if _, ok := r[k]; !ok {
				t.Errorf("result %v lacks %q", r, k)
			}
		}
		mode, _ := r["mode"].(string)
		seen[mode] = r
		if why, _ := r["unavailable"].(string); why != "" {
			if mode != "weft-kernel" {
				t.Errorf("mode %s unavailable (%s): only kernel may be, on a machine with /dev/net/tun", mode, why)
			}
			continue
		}
		if g, _ := r["gbps"].(float64); g <= 0 {
			t.Errorf("%s: gbps %v, want > 0", mode, r["gbps"])
		}
		if rtt, _ := r["rtt_us"].(float64); rtt <= 0 {
			t.Errorf("%s: rtt_us %v, want > 0", mode, r["rtt_us"])
		}
		if s, _ := r["streams"].(float64); s != 1 {
			t.Errorf("%s: streams %v, want 1", mode, r["streams"])
		}
	}
	for _, m := range []string{"underlay", "weft-kernel", "weft-tun", "weft-netstack"} {
		if seen[m] == nil {
			t.Errorf("no %s row in %s", m, stdout.String())
		}
	}
	if r := seen["weft-tun"]; r != nil && r["path"] != bench.PathPodToPod {
		t.Errorf("weft-tun measured over %v, want %s", r["path"], bench.PathPodToPod)
	}
	if r := seen["weft-netstack"]; r != nil && r["path"] != bench.PathNodeToNode {
		t.Errorf("weft-netstack measured over %v, want %s (labelled as such)", r["path"], bench.PathNodeToNode)
	}
}

// TestServerClientLoopback: `weft bench client` against `weft bench
// server` over loopback yields an RTT and throughput for each stream count.
func TestServerClientLoopback(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- bench.Serve(ctx, l) }()
	rep, err := bench.Client(context.Background(), l.Addr().String(), "loopback", []int{1, 3}, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want 2: %+v", len(rep.Results), rep.Results)
	}
	for i, r := range rep.Results {
		if r.Streams != []int{1, 3}[i] || r.Gbps <= 0 || r.RTTus <= 0 || r.Mode != "loopback" || r.Tool != "go" {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	// Nothing listening: a clear error, not a zero result.
	if _, err := bench.Client(context.Background(), l.Addr().String(), "x", []int{1}, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "bench server") {
		t.Errorf("client without a server: %v, want an error naming the server", err)
	}
}

// TestPrintUnavailable: an unavailable mode shows its reason, not numbers.
func TestPrintUnavailable(t *testing.T) {
	var b bytes.Buffer
	bench.Report{Results: []bench.Result{
		{Mode: "underlay", Path: bench.PathNodeToNode, Streams: 1, Gbps: 20, RTTus: 40, Ratio: 1, Tool: "iperf3"},
		{Mode: "weft-kernel", Path: bench.PathPodToPod, Streams: 1, Unavailable: "kernel has no WireGuard support"},
	}}.Print(&b)
	out := b.String()
	for _, s := range []string{"unavailable: kernel has no WireGuard support", "20.00", "1.00×"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
}
