package splice

import (
	"io"
	"net"
	"sync"
)

// Conns copies a to b and b to a until both directions are done, then
// closes both. When one side has sent everything (EOF), the other side's
// write half is shut and the opposite direction keeps flowing, so TCP
// half-closes cross the splice. When either side fails (a reset, a write
// error), both are aborted, so the failure reaches both peers as a reset
// rather than as a clean end of stream.
func Conns(a, b net.Conn) {
	var once sync.Once
	end := func(abortive bool) {
		once.Do(func() {
			if abortive {
				Abort(a)
				Abort(b)
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

// Abort closes c with a RST where c can send one (*net.TCPConn, a
// netstack overlay connection), and plainly otherwise.
func Abort(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

// Tracker owns the goroutines and connections of one server: the
// forwarder of a netstack Stack, or one Serve call of the sidecar's proxy.
// Shutdown aborts every connection it tracks, which ends the goroutines
// blocked on them, and makes Enter and Track fail from then on; Wait waits
// for the goroutines. The zero Tracker is ready to use.
type Tracker struct {
	mu     sync.Mutex
	closed bool
	nextID uint64
	// conns is keyed by an ID, not by the conn: a net.Conn from a
	// DialFunc need not be comparable.
	conns map[uint64][]net.Conn
	wg    sync.WaitGroup
}

// Enter counts the calling goroutine until Leave, or returns false once
// the tracker is shut down.
func (t *Tracker) Enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

// Leave ends what Enter counted.
func (t *Tracker) Leave() { t.wg.Done() }

// Start runs fn on a counted goroutine, or returns false once the
// tracker is shut down.
func (t *Tracker) Start(fn func()) bool {
	if !t.Enter() {
		return false
	}
	go func() {
		defer t.Leave()
		fn()
	}()
	return true
}

// Track adds conns until Untrack with the returned ID, or returns false
// once the tracker is shut down; the caller then closes them.
func (t *Tracker) Track(conns ...net.Conn) (uint64, bool) {
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

// Untrack forgets the connections Track added under id.
func (t *Tracker) Untrack(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, id)
}

// Shutdown aborts every tracked connection; Enter, Start and Track fail
// from then on.
func (t *Tracker) Shutdown() {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for _, group := range conns {
		for _, c := range group {
			Abort(c)
		}
	}
}

// Wait waits for the goroutines Enter and Start counted.
func (t *Tracker) Wait() { t.wg.Wait() }
