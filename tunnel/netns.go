package tunnel

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// netnsPin remembers the network namespace a device was created in, so that
// the namespace-bound work wireguard-go does later from its own goroutines
// happens there too. Goroutines run on any OS thread, and threads sit in the
// process's namespace: without the pin, a device created inside a lab node's
// namespace would re-open its UDP sockets (interface down and up, a port
// change) in the root namespace, and ask the root namespace for its TUN's
// MTU. When the device lives in the process's own namespace (every real node)
// nothing is held or switched, so it needs no privilege.
type netnsPin struct {
	netns ns.NetNS // nil: the process's own namespace

	// wireguard-go's event goroutine can still be inside do while the device
	// closes, so close waits for it and later calls fail cleanly.
	mu     sync.RWMutex
	closed bool
}

func pinNetns() (*netnsPin, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	same, err := sameNetns(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()), "/proc/self/ns/net")
	if err != nil || same {
		// Without /proc we cannot tell; the process namespace is the one in use.
		return &netnsPin{}, nil
	}
	cur, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("hold network namespace: %w", err)
	}
	return &netnsPin{netns: cur}, nil
}

// do runs fn in the pinned namespace.
func (p *netnsPin) do(fn func() error) error {
	if p.netns == nil {
		return fn()
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return os.ErrClosed
	}
	return p.netns.Do(func(ns.NetNS) error { return fn() })
}

func (p *netnsPin) close() error {
	if p.netns == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.netns.Close()
}

// netnsBind opens wireguard-go's UDP sockets in the pinned namespace.
type netnsBind struct {
	conn.Bind
	pin *netnsPin
}

func sameNetns(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}

// Open opens the sockets inside the device's namespace.
func (b *netnsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = b.pin.do(func() error {
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	return fns, actual, err
}

// netnsTUN asks for a TUN's MTU in the pinned namespace: wireguard-go's
// NativeTun looks the MTU up by interface name through a fresh socket.
type netnsTUN struct {
	tun.Device
	pin *netnsPin
}

func (t *netnsTUN) MTU() (mtu int, err error) {
	err = t.pin.do(func() error {
		mtu, err = t.Device.MTU()
		return err
	})
	return mtu, err
}
