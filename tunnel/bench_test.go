package tunnel_test

import (
	"context"
	"io"
	"testing"

	"github.com/weftnet/weft/tunnel"
)

// BenchmarkTUNThroughput streams TCP through two tun devices in two lab
// namespaces (both in this process); MB/s is the tunnel's throughput.
func BenchmarkTUNThroughput(b *testing.B) { benchThroughput(b, tunnel.ModeTUN) }

// BenchmarkNetstackThroughput sends from a netstack device to a tun device.
func BenchmarkNetstackThroughput(b *testing.B) { benchThroughput(b, tunnel.ModeNetstack) }

func benchThroughput(b *testing.B, mode tunnel.Mode) {
	lab := newLab(b, 2)
	a := startDevice(b, lab, 1, mode)
	c := startDevice(b, lab, 2, tunnel.ModeTUN)
	mesh(b, a, c)
	l := c.listen(b, "tcp")
	done := make(chan int64, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- 0
			return
		}
		n, _ := io.Copy(io.Discard, conn)
		conn.Close()
		done <- n
	}()
	conn, err := a.dial(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := conn.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	conn.Close()
	if n := <-done; n != int64(b.N)*int64(len(buf)) {
		b.Fatalf("received %d of %d bytes", n, int64(b.N)*int64(len(buf)))
	}
}
