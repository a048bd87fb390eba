// Command testapp is the one program in the e2e cluster's test images: the
// pod sandbox's pause process, an echo server, and the client that probes
// other pods. Static, no libc, so an image is this binary alone.
//
//	testapp pause                  wait for SIGTERM, reaping children (pid 1 of a sandbox)
//	testapp serve                  echo TCP and UDP on :8080
//	testapp probe ADDR...          one TCP and one UDP round trip to each ADDR (host or host:port)
//	testapp proxied ADDR...        one TCP round trip to each ADDR through the SOCKS5 proxy in $ALL_PROXY
//	testapp stream ADDR            send and read back a TCP stream, print a line a second, until stdin closes
//	testapp send ADDR BYTES        send BYTES of a marker pattern over TCP and read them back
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/proxy"
)

// Port is where serve listens and where probe connects when ADDR has no port.
const Port = "8080"

// Marker is the pattern send writes: a capture on the underlay must never
// contain it in the clear.
const Marker = "weft-e2e-plaintext-marker."

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testapp pause|serve|probe ADDR...|proxied ADDR...|stream ADDR|send ADDR BYTES")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "pause":
		pause()
	case "serve":
		err = serve()
	case "probe":
		err = probe(os.Args[2:])
	case "proxied":
		err = proxied(os.Args[2:])
	case "stream":
		if len(os.Args) != 3 {
			err = errors.New("stream: want one ADDR")
			break
		}
		err = stream(withPort(os.Args[2]))
	case "send":
		if len(os.Args) != 4 {
			err = errors.New("send: want ADDR BYTES")
			break
		}
		n, perr := strconv.Atoi(os.Args[3])
		if perr != nil {
			err = fmt.Errorf("send: bytes %q: %w", os.Args[3], perr)
			break
		}
		err = send(withPort(os.Args[2]), n)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

// pause is what a sandbox's pid 1 does: nothing, but reap the orphans the
// kernel hands it, until it is told to stop.
func pause() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve() error {
	ln, err := net.Listen("tcp", ":"+Port)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", ":"+Port)
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

func withPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(addr, Port)
}

// probe makes one TCP and one UDP round trip to each address and prints
// "tcp ADDR ok" / "udp ADDR ok" lines; any failure fails the command.
func probe(addrs []string) error {
	var errs []error
	for _, a := range addrs {
		a = withPort(a)
		msg := []byte("probe " + a)
		if err := roundTrip("tcp", a, msg); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Println("tcp", a, "ok")
		}
		// UDP may lose a datagram: three tries.
		var uerr error
		for try := 0; try < 3; try++ {
			if uerr = roundTrip("udp", a, msg); uerr == nil {
				break
			}
		}
		if uerr != nil {
			errs = append(errs, uerr)
		} else {
			fmt.Println("udp", a, "ok")
		}
	}
	return errors.Join(errs...)
}

func roundTrip(network, addr string, msg []byte) error {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("%s %s: %w", network, addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("%s %s: write: %w", network, addr, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("%s %s: read: %w", network, addr, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("%s %s: echo %q, want %q", network, addr, got, msg)
	}
	return nil
}

// send writes n bytes of Marker over TCP and checks they come back.
func send(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("send %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	data := bytes.Repeat([]byte(Marker), n/len(Marker)+1)[:n]
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("send %s: read back: %w", addr, err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("send %s: write: %w", addr, err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("send %s: echo differs", addr)
	}
	fmt.Println("sent", n, "bytes to", addr)
	return nil
}

// streamMax bounds a stream whose stdin never closes.
const streamMax = 10 * time.Minute

// stream keeps one TCP connection busy: a numbered line out and back every
// 100 ms; it prints a line a second and fails on the first error, so its
// exit tells whether the connection survived. It ends, with success, when
// its stdin closes (the test's `kubectl exec -i` hangs up) or after
// streamMax.
func stream(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("stream %s: %w", addr, err)
	}
	defer c.Close()
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	end := time.After(streamMax)
	for i := 0; ; i++ {
		select {
		case <-stop:
			fmt.Println("stream", addr, "done after", i, "round trips")
			return nil
		case <-end:
			fmt.Println("stream", addr, "done after", i, "round trips (time limit)")
			return nil
		default:
		}
		msg := []byte(fmt.Sprintf("%012d\n", i))
		// A long deadline: in tun mode pod traffic pauses while an agent restarts.
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("stream %s: write %d: %w", addr, i, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("stream %s: read %d: %w", addr, i, err)
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("stream %s: echo %q, want %q", addr, got, msg)
		}
		if i%10 == 0 {
			fmt.Println("stream", addr, i)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// proxied makes one TCP round trip to each address through the proxy the
// sidecar injector put in $ALL_PROXY (socks5h://127.0.0.1:1080), as an app
// that honours the variable does.
func proxied(addrs []string) error {
	u := os.Getenv("ALL_PROXY")
	if u == "" {
		return errors.New("proxied: $ALL_PROXY is not set (no sidecar injected?)")
	}
	pu, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("proxied: $ALL_PROXY %q: %w", u, err)
	}
	d, err := proxy.FromURL(pu, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("proxied: $ALL_PROXY %q: %w", u, err)
	}
	var errs []error
	for _, a := range addrs {
		a = withPort(a)
		if err := proxiedRoundTrip(d, a); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println("tcp", a, "via", u, "ok")
	}
	return errors.Join(errs...)
}

func proxiedRoundTrip(d proxy.Dialer, addr string) error {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp %s via proxy: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("proxied " + addr)
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("tcp %s via proxy: write: %w", addr, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("tcp %s via proxy: read: %w", addr, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("tcp %s via proxy: echo %q, want %q", addr, got, msg)
	}
	return nil
}
