package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/agent/plan"
)

// servingConns counts the connections this process's HTTP servers hold.
func servingConns() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "net/http.(*conn).serve(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// The local API keeps no connection of a client that is gone: Client
// closes each connection after its reply, and the server closes a kept-
// alive connection left idle. Before, every poll through a new Client left
// a connection, its goroutine and buffers in the agent for good.
func TestAPIConnectionsDoNotPile(t *testing.T) {
	s := newSim(t, plan.LeaseConfig{Range: netip.MustParsePrefix("100.64.0.0/22"), BlockBits: 24, TTL: time.Minute})
	s.profile = "local"
	a1 := s.start("a1", 0, false) // the default idle timeout: a minute
	s.apiIdle = 300 * time.Millisecond
	a2 := s.start("a2", 0, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, a := range []*simAgent{a1, a2} {
		select {
		case <-a.Ready():
		case <-ctx.Done():
			t.Fatalf("%s not ready", a.cfg.NodeName)
		}
	}
	waitConns := func(want int, d time.Duration, what string) {
		t.Helper()
		waitUntil(t, d, what, func() error {
			if n := servingConns(); n != want {
				return fmt.Errorf("the API servers hold %d connections, want %d", n, want)
			}
			return nil
		})
	}
	waitConns(0, 5*time.Second, "no connection before the test")

	for i := 0; i < 40; i++ {
		if _, err := api.NewClient(a1.cfg.SocketPath).Status(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A kept-alive connection would stay for a1's idle minute.
	waitConns(0, 5*time.Second, "40 clients' connections closed")

	// A client that keeps its connection alive (http.Transport's default).
	keep := api.NewClient(a2.cfg.SocketPath).HTTP
	keep.Transport.(*http.Transport).DisableKeepAlives = false
	defer keep.CloseIdleConnections()
	resp, err := keep.Get("http://agent/v1/lease")
	if err != nil {
		t.Fatal(err)
	}
	// Read to the end: a body closed unread closes the connection.
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := servingConns(); n != 1 {
		t.Fatalf("after a kept-alive request the servers hold %d connections, want 1", n)
	}
	waitConns(0, 10*time.Second, "the idle connection closed by the server")
}
