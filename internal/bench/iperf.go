package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// Throughput is one iperf3 measurement.
type Throughput struct {
	Streams int
	// Gbps is what the receiver got.
	Gbps float64
	// SenderCPU and ReceiverCPU are iperf3's own CPU use in percent of one
	// core; the tunnel's CPU is not in them.
	SenderCPU, ReceiverCPU float64
	Retransmits            int
}

type iperfReport struct {
	End struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		CPU struct {
			Host   float64 `json:"host_total"`
			Remote float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
	Error string `json:"error"`
}

// Iperf3 runs an iperf3 server in `server` and a client in `client` against
// target for dur with the given number of parallel streams.
func Iperf3(ctx context.Context, client, server *netlab.Node, target netip.Addr, streams int, dur time.Duration) (Throughput, error) {
	port := 5201
	srv := server.Command(ctx, "iperf3", "-s", "-1", "-p", strconv.Itoa(port), "-B", target.String())
	if err := srv.Start(); err != nil {
		return Throughput{}, fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()

	var out []byte
	var err error
	// The server needs a moment to bind; retry the client briefly.
	for try := 0; try < 20; try++ {
		secs := strconv.FormatFloat(dur.Seconds(), 'f', 1, 64)
		out, err = client.Command(ctx, "iperf3", "-c", target.String(), "-p", strconv.Itoa(port),
			"-t", secs, "-P", strconv.Itoa(streams), "-J").Output()
		if err == nil || !strings.Contains(string(out), "unable to connect") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var rep iperfReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		if err == nil {
			err = jerr
		}
		return Throughput{}, fmt.Errorf("iperf3 client to %s: %v: %s", target, err, strings.TrimSpace(string(out)))
	}
	if rep.Error != "" {
		return Throughput{}, fmt.Errorf("iperf3 client to %s: %s", target, rep.Error)
	}
	return Throughput{
		Streams:     streams,
		Gbps:        rep.End.SumReceived.BitsPerSecond / 1e9,
		SenderCPU:   rep.End.CPU.Host,
		ReceiverCPU: rep.End.CPU.Remote,
		Retransmits: rep.End.SumSent.Retransmits,
	}, nil
}

// HaveIperf3 reports whether iperf3 is installed.
func HaveIperf3() bool {
	_, err := exec.LookPath("iperf3")
	return err == nil
}
