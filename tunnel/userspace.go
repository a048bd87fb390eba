package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// userspace is a wireguard-go device on some tun.Device (a TUN or a gVisor
// stack), configured in-process through UAPI text and serving the UAPI socket
// so `wg` and wgctrl see it like a kernel device.
type userspace struct {
	name string
	mode Mode
	log  *slog.Logger
	dev  *device.Device
	pin  *netnsPin

	mu  sync.Mutex // serialises SetPeers/SetPrivateKey read-diff-write cycles
	pub Key

	connsMu   sync.Mutex // guards uapi, conns and closing
	uapi      net.Listener
	conns     map[net.Conn]struct{}
	closing   bool
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	// beforeClose runs first in Close (un-persisting a TUN).
	beforeClose func()
}

func startUserspace(cfg Config, mode Mode, tdev tun.Device) (*userspace, error) {
	pin, err := pinNetns()
	if err != nil {
		tdev.Close()
		return nil, fmt.Errorf("tunnel %s: %w", cfg.Name, err)
	}
	if pin.netns != nil {
		tdev = &netnsTUN{Device: tdev, pin: pin}
	}
	u := &userspace{
		name:  cfg.Name,
		mode:  mode,
		log:   cfg.Logger.With("dev", cfg.Name, "mode", mode),
		pin:   pin,
		conns: map[net.Conn]struct{}{},
	}
	u.dev = device.NewDevice(tdev, &netnsBind{Bind: conn.NewDefaultBind(), pin: pin}, wgLogger(u.log))
	k := cfg.PrivateKey.wg()
	set := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hexKey(k), cfg.ListenPort)
	if err := u.dev.IpcSet(set); err != nil {
		u.dev.Close()
		pin.close()
		return nil, fmt.Errorf("tunnel %s: configure: %w", cfg.Name, err)
	}
	u.pub = cfg.PrivateKey.Public()
	if err := u.dev.Up(); err != nil {
		u.dev.Close()
		pin.close()
		return nil, fmt.Errorf("tunnel %s: up: %w", cfg.Name, err)
	}
	if err := u.serveUAPI(); err != nil {
		if !cfg.UAPIOptional {
			u.dev.Close()
			pin.close()
			return nil, err
		}
		u.log.Warn("no UAPI socket: `wg show` cannot read this device", "err", err)
	}
	return u, nil
}

// serveUAPI listens on /var/run/wireguard/<name>.sock and hands each
// connection to the device, as wireguard-go's own main does. wireguard-go's
// listener gives up for good on any inotify event on the socket file (a
// chmod, a stale socket being replaced); the device then keeps the socket
// alive by opening it again, so `wg show` always works while it is up.
func (u *userspace) serveUAPI() error {
	l, err := u.listenUAPI()
	if err != nil {
		return err
	}
	u.wg.Add(1)
	go u.acceptUAPI(l)
	return nil
}

func (u *userspace) listenUAPI() (net.Listener, error) {
	f, err := ipc.UAPIOpen(u.name)
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: open uapi socket: %w", u.name, err)
	}
	l, err := ipc.UAPIListen(u.name, f)
	f.Close() // UAPIListen holds its own descriptor
	if err != nil {
		return nil, fmt.Errorf("tunnel %s: listen on uapi socket: %w", u.name, err)
	}
	u.connsMu.Lock()
	defer u.connsMu.Unlock()
	if u.closing {
		l.Close()
		return nil, os.ErrClosed
	}
	u.uapi = l
	return l, nil
}

func (u *userspace) acceptUAPI(l net.Listener) {
	defer u.wg.Done()
	for tries := 0; ; {
		c, err := l.Accept()
		if err != nil {
			u.connsMu.Lock()
			closing := u.closing
			u.connsMu.Unlock()
			l.Close()
			if closing {
				return
			}
			if tries++; tries > 20 {
				u.log.Error("uapi socket lost for good; wg show cannot read this device", "err", err)
				return
			}
			u.log.Warn("uapi socket lost; opening it again", "err", err)
			time.Sleep(50 * time.Millisecond)
			if l, err = u.listenUAPI(); err != nil {
				if !errors.Is(err, os.ErrClosed) {
					u.log.Error("uapi socket cannot be reopened", "err", err)
				}
				return
			}
			continue
		}
		tries = 0
		u.connsMu.Lock()
		u.conns[c] = struct{}{}
		u.connsMu.Unlock()
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			u.dev.IpcHandle(c)
			u.connsMu.Lock()
			delete(u.conns, c)
			u.connsMu.Unlock()
		}()
	}
}

func (u *userspace) Name() string   { return u.name }
func (u *userspace) Mode() Mode     { return u.mode }
func (u *userspace) PublicKey() Key { u.mu.Lock(); defer u.mu.Unlock(); return u.pub }

func (u *userspace) Stats() (Stats, error) {
	s, err := u.dev.IpcGet()
	if err != nil {
		return Stats{}, fmt.Errorf("tunnel %s: read config: %w", u.name, err)
	}
	st, err := parseUAPIGet(s)
	if err != nil {
		return Stats{}, fmt.Errorf("tunnel %s: %w", u.name, err)
	}
	st.Name, st.Mode = u.name, u.mode
	return st, nil
}

func (u *userspace) SetPeers(peers []Peer) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	n, err := applyPeers(u.name, u.Stats, peers, func(pcs []wgtypes.PeerConfig) error {
		return u.dev.IpcSet(encodeUAPIPeers(pcs))
	})
	if err == nil && n > 0 {
		u.log.Debug("peers changed", "changes", n, "peers", len(peers))
	}
	return err
}

func (u *userspace) SetPrivateKey(k PrivateKey) error {
	if k.IsZero() {
		return fmt.Errorf("tunnel %s: private key is unset", u.name)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	wk := k.wg()
	if err := u.dev.IpcSet("private_key=" + hexKey(wk) + "\n"); err != nil {
		return fmt.Errorf("tunnel %s: set private key: %w", u.name, err)
	}
	u.pub = k.Public()
	return nil
}

func (u *userspace) Close() error {
	u.closeOnce.Do(func() {
		if u.beforeClose != nil {
			u.beforeClose()
		}
		var errs []error
		u.connsMu.Lock()
		u.closing = true
		if u.uapi != nil {
			// The accept loop may have seen the listener die already; a
			// second close error says nothing about the device.
			u.uapi.Close()
		}
		for c := range u.conns {
			c.Close()
		}
		u.connsMu.Unlock()
		u.dev.Close() // closes the bind and the tun.Device too
		u.wg.Wait()
		errs = append(errs, u.pin.close())
		u.closeErr = errors.Join(errs...)
	})
	return u.closeErr
}

// wgLogger adapts wireguard-go's printf logger to slog. Verbose lines are
// only formatted when debug logging is on: the data path logs per packet.
func wgLogger(l *slog.Logger) *device.Logger {
	lg := &device.Logger{Verbosef: device.DiscardLogf, Errorf: func(f string, a ...any) {
		l.Error(fmt.Sprintf(f, a...))
	}}
	if l.Enabled(context.Background(), slog.LevelDebug) {
		lg.Verbosef = func(f string, a ...any) { l.Debug(fmt.Sprintf(f, a...)) }
	}
	return lg
}
