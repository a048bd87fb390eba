package netstack

import (
	"io"
	"net"
	"sync"
)

// splice copies a to b and b to a until both directions are done, then
// closes both. When one side has sent everything (EOF), the other side's
// write half is shut and the opposite direction keeps flowing, so TCP
// half-closes cross the splice. When either side fails (a reset, a write
// error), both are aborted, so the failure reaches both peers as a reset
// rather than as a clean end of stream.
func splice(a, b net.Conn) {
	var once sync.Once
	end := func(abortive bool) {
		once.Do(func() {
			if abortive {
				abort(a)
				abort(b)
				return
			}
			a.Close()
			b.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(a, b, end)
	}()
	copyHalf(b, a, end)
	<-done
	end(false)
}

// copyHalf copies src to dst, then carries src's EOF to dst as a
// half-close. A dst that cannot half-close ends the splice cleanly.
func copyHalf(dst, src net.Conn, end func(abortive bool)) {
	if _, err := io.Copy(dst, src); err != nil {
		end(true)
		return
	}
	cw, ok := dst.(interface{ CloseWrite() error })
	if !ok {
		end(false)
		return
	}
	if err := cw.CloseWrite(); err != nil {
		end(true)
	}
}

// abort closes c with a RST where c can send one (*net.TCPConn,
// overlayConn), and plainly otherwise.
func abort(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

// tracker owns the goroutines and connections of one server: the
// forwarder of a Stack, or one Serve call of a Proxy. shutdown aborts
// every connection it tracks, which ends the goroutines blocked on them,
// and makes enter and track fail from then on; wait waits for the
// goroutines.
type tracker struct {
	mu     sync.Mutex
	closed bool
	nextID uint64
	// conns is keyed by an ID, not by the conn: a net.Conn from a
	// DialFunc need not be comparable.
	conns map[uint64][]net.Conn
	wg    sync.WaitGroup
}

// enter counts the calling goroutine until leave, or returns false once
// the tracker is shut down.
func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) leave() { t.wg.Done() }

// start runs fn on a counted goroutine, or returns false once the
// tracker is shut down.
func (t *tracker) start(fn func()) bool {
	if !t.enter() {
		return false
	}
	go func() {
		defer t.leave()
		fn()
	}()
	return true
}

// track adds conns until untrack with the returned ID, or returns false
// once the tracker is shut down; the caller then closes them.
func (t *tracker) track(conns ...net.Conn) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, false
	}
	if t.conns == nil {
		t.conns = make(map[uint64][]net.Conn)
	}
	t.nextID++
	t.conns[t.nextID] = conns
	return t.nextID, true
}

func (t *tracker) untrack(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, id)
}

func (t *tracker) shutdown() {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for _, group := range conns {
		for _, c := range group {
			abort(c)
		}
	}
}

func (t *tracker) wait() { t.wg.Wait() }
