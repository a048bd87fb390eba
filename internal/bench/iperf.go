package bench

import (
	"bytes"
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
		Streams []struct {
			Sender struct {
				MeanRTT float64 `json:"mean_rtt"` // µs
			} `json:"sender"`
		} `json:"streams"`
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
	return iperf3Bind(ctx, client, server, target, target, streams, dur)
}

// iperf3Bind is Iperf3 with the server bound to bind, which is not target
// when the client reaches the server through a forward.
func iperf3Bind(ctx context.Context, client, server *netlab.Node, target, bind netip.Addr, streams int, dur time.Duration) (Throughput, error) {
	port := 5201
	srv := server.Command(ctx, "iperf3", "-s", "-1", "-p", strconv.Itoa(port), "-B", bind.String())
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		return Throughput{}, fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()

	// The server needs a moment to bind: retry the client briefly. iperf3 -J
	// reports "unable to connect" in its JSON, sometimes with exit status 0.
	var rep iperfReport
	for try := 0; ; try++ {
		secs := strconv.Itoa(max(1, int(dur.Round(time.Second).Seconds())))
		out, err := client.Command(ctx, "iperf3", "-c", target.String(), "-p", strconv.Itoa(port),
			"-t", secs, "-P", strconv.Itoa(streams), "-J").Output()
		rep = iperfReport{}
		if jerr := json.Unmarshal(out, &rep); jerr != nil {
			if err == nil {
				err = jerr
			}
			return Throughput{}, fmt.Errorf("iperf3 client to %s: %v: %s", target, err, strings.TrimSpace(string(out)))
		}
		if rep.Error == "" {
			break
		}
		// Through a forward, a server not yet up shows as a reset.
		if !strings.Contains(rep.Error, "unable to connect") && !strings.Contains(rep.Error, "reset by peer") || try == 50 {
			return Throughput{}, fmt.Errorf("iperf3 client to %s: %s (server: %s)", target, rep.Error, strings.TrimSpace(srvOut.String()))
		}
		time.Sleep(100 * time.Millisecond)
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

// meanRTT is the mean of the streams' mean smoothed RTT in µs (Linux
// iperf3 reports it from TCP_INFO), 0 when absent.
func (r iperfReport) meanRTT() float64 {
	var sum float64
	n := 0
	for _, st := range r.End.Streams {
		if st.Sender.MeanRTT > 0 {
			sum += st.Sender.MeanRTT
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}
