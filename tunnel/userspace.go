package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
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

	uapi      net.Listener
	conns     map[net.Conn]struct{}
	connsMu   sync.Mutex
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
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
		u.dev.Close()
		pin.close()
		return nil, err
	}
	return u, nil
}

// serveUAPI listens on /var/run/wireguard/<name>.sock and hands each
// connection to the device, as wireguard-go's own main does.
func (u *userspace) serveUAPI() error {
	f, err := ipc.UAPIOpen(u.name)
	if err != nil {
		return fmt.Errorf("tunnel %s: open uapi socket: %w", u.name, err)
	}
	l, err := ipc.UAPIListen(u.name, f)
	if err != nil {
		f.Close()
		return fmt.Errorf("tunnel %s: listen on uapi socket: %w", u.name, err)
	}
	u.uapi = l
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
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
	}()
	return nil
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
	st, err := u.Stats()
	if err != nil {
		return err
	}
	pcs, err := diffPeers(st.Peers, peers)
	if err != nil {
		return fmt.Errorf("tunnel %s: %w", u.name, err)
	}
	if len(pcs) == 0 {
		return nil
	}
	if err := u.dev.IpcSet(encodeUAPIPeers(pcs)); err != nil {
		return fmt.Errorf("tunnel %s: set peers: %w", u.name, err)
	}
	u.log.Debug("peers changed", "changes", len(pcs), "peers", len(peers))
	return nil
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
		var errs []error
		if u.uapi != nil {
			errs = append(errs, u.uapi.Close())
		}
		u.connsMu.Lock()
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
