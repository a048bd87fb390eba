package netlab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Capture is tcpdump writing what one interface of a node sees to a pcap
// file, from StartCapture until Stop.
type Capture struct {
	// File is the pcap file.
	File string
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
	tail strings.Builder // tcpdump's stderr after "listening on", read once done
}

// StartCapture runs tcpdump on iface inside n, writing file, and returns
// once it listens. count > 0 makes it stop by itself after that many
// packets. --immediate-mode matters: without it libpcap hands packets over
// a ring block at a time, and those still in the ring when tcpdump is
// stopped never reach the file. The kernel buffer is 32 MiB (tcpdump's
// default is 2): on a loaded machine a gigabit burst fills 2 MiB before
// tcpdump is scheduled, and the capture loses packets (see Dropped).
func StartCapture(ctx context.Context, n *Node, iface, file string, count int) (*Capture, error) {
	args := []string{"-i", iface, "-s", "0", "-B", "32768", "-U", "--immediate-mode", "-n", "-w", file}
	if count > 0 {
		args = append(args, "-c", fmt.Sprint(count))
	}
	cmd := n.Command(ctx, "tcpdump", args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("tcpdump on %s %s: %w", n.Name, iface, err)
	}
	ready := make(chan struct{})
	c := &Capture{File: file, cmd: cmd, done: make(chan struct{})}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(ready)
				break
			}
		}
		io.Copy(&c.tail, stderr)
	}()
	// Wait reads nothing itself: the pipe is drained (and c.tail complete)
	// before it is called, as os/exec asks.
	go func() { <-read; cmd.Wait(); close(c.done) }()
	select {
	case <-ready:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("tcpdump on %s %s exited before it listened", n.Name, iface)
	case <-time.After(10 * time.Second):
		c.Stop()
		return nil, fmt.Errorf("tcpdump on %s %s did not start listening within 10s", n.Name, iface)
	}
}

// Stop ends the capture (SIGINT, so tcpdump flushes; SIGKILL after 10 s)
// and waits for it. Stopping twice is fine.
func (c *Capture) Stop() {
	c.once.Do(func() {
		c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	})
}

// Dropped is how many packets the kernel dropped because tcpdump did not
// read them in time, from tcpdump's summary at Stop. A capture with drops
// misses packets: a check that counts them cannot be trusted. An error
// means no summary was found.
func (c *Capture) Dropped() (int, error) {
	c.Stop()
	for _, l := range strings.Split(c.tail.String(), "\n") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "%d packets dropped by kernel", &n); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("tcpdump printed no drop count: %q", c.tail.String())
}

// PcapMatch returns the one-line summaries of the packets in file that
// match a tcpdump filter ("" matches all).
func PcapMatch(file, filter string) ([]string, error) {
	out, err := exec.Command("tcpdump", "-r", file, "-n", filter).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("tcpdump -r %s %q: %w", file, filter, err)
	}
	s := strings.TrimSpace(string(out))
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}
