package sidecar

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// maxUDPFlows bounds the clients one UDP forward serves at once.
const maxUDPFlows = 1024

// RelayUDP serves a local UDP forward on pc: each client address gets its
// own upstream socket from dial (over the mesh), the upstream's replies go
// back to that client, and a flow silent for idle is closed. At most 1024
// flows live at once; datagrams of further clients are dropped. It returns
// when ctx ends, after closing pc and every flow.
func RelayUDP(ctx context.Context, pc *net.UDPConn, dial func(context.Context) (net.Conn, error), idle time.Duration) error {
	var (
		mu    sync.Mutex
		flows = map[netip.AddrPort]net.Conn{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	defer func() {
		pc.Close()
		mu.Lock()
		for _, c := range flows {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		mu.Lock()
		up, ok := flows[from]
		full := len(flows) >= maxUDPFlows
		mu.Unlock()
		if !ok {
			if full {
				continue
			}
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			up, err = dial(dctx)
			cancel()
			if err != nil {
				continue // the client retries, as with any lost datagram
			}
			mu.Lock()
			flows[from] = up
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				back := make([]byte, 64<<10)
				for {
					up.SetReadDeadline(time.Now().Add(idle))
					m, err := up.Read(back)
					if err != nil {
						break
					}
					pc.WriteToUDPAddrPort(back[:m], from)
				}
				mu.Lock()
				delete(flows, from)
				mu.Unlock()
				up.Close()
			}()
		}
		up.SetReadDeadline(time.Now().Add(idle))
		up.Write(buf[:n])
	}
}
