package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/agent/plan"
	"github.com/weftnet/weft/tunnel"
)

// Report builds the current status report.
func (a *Agent) Report() api.Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := api.Report{
		Ready:         a.ready,
		LastReconcile: a.last.at,
		Self: api.SelfReport{
			Name: a.cfg.NodeName, Mode: a.tags.Mode, Interface: a.cfg.Interface,
			PublicKey: a.tags.PublicKey.String(), Fingerprint: tunnel.Fingerprint(a.tags.PublicKey),
			MTU: a.cfg.MTU,
		},
	}
	if a.mem != nil {
		st.Self.GossipEncrypted = a.mem.Encrypted()
	}
	if a.tags.Endpoint.IsValid() {
		st.Self.Endpoint = a.tags.Endpoint.String()
	}
	if a.tags.Block.IsValid() {
		st.Self.Block = a.tags.Block.String()
		st.Self.Address = plan.NodeAddress(a.tags.Block).String()
	}
	if a.last.err != nil {
		st.LastError = a.last.err.Error()
	}
	var peers map[tunnel.Key]tunnel.PeerStats
	if a.dev != nil {
		if ds, err := a.dev.Stats(); err == nil {
			peers = map[tunnel.Key]tunnel.PeerStats{}
			for _, p := range ds.Peers {
				peers[p.PublicKey] = p
			}
		}
	}
	for _, m := range a.last.members {
		ms := api.MemberReport{Name: m.Name, State: m.Status.String(), Since: m.Since}
		if m.TagsErr != nil {
			ms.TagsError = m.TagsErr.Error()
		} else {
			ms.Mode = m.Tags.Mode
			ms.PublicKey = m.Tags.PublicKey.String()
			if m.Tags.Endpoint.IsValid() {
				ms.Endpoint = m.Tags.Endpoint.String()
			}
			if m.Tags.Block.IsValid() {
				ms.Block = m.Tags.Block.String()
				owner, ok := a.last.leases.Owner(m.Tags.Block)
				ms.OwnsBlock = ok && owner == m.Name
			}
			if p, ok := peers[m.Tags.PublicKey]; ok && m.Name != a.cfg.NodeName {
				ps := &api.PeerReport{LastHandshake: p.LastHandshake, RxBytes: p.RxBytes, TxBytes: p.TxBytes}
				if p.Endpoint.IsValid() {
					ps.Endpoint = p.Endpoint.String()
				}
				ms.Peer = ps
			}
		}
		st.Members = append(st.Members, ms)
	}
	for _, c := range a.conflicts {
		st.Conflicts = append(st.Conflicts, api.ConflictReport{Block: c.Block.String(), Winner: c.Winner, Loser: c.Loser})
	}
	return st
}

// Lease reports the node's lease for the CNI plugin.
func (a *Agent) Lease() api.Lease {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := api.Lease{MTU: a.cfg.MTU}
	if a.tags.Block.IsValid() {
		l.Block = a.tags.Block.String()
		l.NodeAddress = plan.NodeAddress(a.tags.Block).String()
	}
	switch {
	case !a.ready:
		l.Reason = "agent is starting"
	case !a.tags.Block.IsValid():
		l.Reason = "no lease"
	default:
		if owner, ok := a.last.leases.Owner(a.tags.Block); ok && owner != a.cfg.NodeName {
			l.Reason = "lease conflict: " + owner + " holds " + a.tags.Block.String()
		} else {
			l.Ready = true
		}
	}
	return l
}

type apiServer struct {
	servers []*http.Server
	wg      sync.WaitGroup
}

func (s *apiServer) close() {
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(ctx)
		cancel()
	}
	s.wg.Wait()
}

// handler serves the API, metrics and health; with debug (the unix socket,
// root only) also Go's profiles under /debug/pprof/, to see where an
// agent's CPU and memory go on a live node.
func (a *Agent) handler(debug bool) http.Handler {
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, a.Report()) })
	mux.HandleFunc("GET /v1/lease", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, a.Lease()) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if l := a.Lease(); !l.Ready {
			http.Error(w, "not ready: "+l.Reason, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", a.cfg.Registry)
	if debug {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// serveAPI serves the local API on the unix socket (mode 0600: root only)
// and, if configured, metrics and health over TCP.
func (a *Agent) serveAPI(ctx context.Context) (*apiServer, error) {
	s := &apiServer{}
	if a.cfg.SocketPath == "-" {
		return s, a.serveMetrics(s)
	}
	if err := os.MkdirAll(filepath.Dir(a.cfg.SocketPath), 0o755); err != nil {
		return nil, fmt.Errorf("agent api: %w", err)
	}
	// A socket left by a killed agent would make Listen fail.
	if err := os.Remove(a.cfg.SocketPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("agent api: remove stale socket: %w", err)
	}
	ul, err := net.Listen("unix", a.cfg.SocketPath)
	if err != nil {
		return nil, fmt.Errorf("agent api: %w", err)
	}
	os.Chmod(a.cfg.SocketPath, 0o600)
	s.start(a.httpServer(true), ul)
	if err := a.serveMetrics(s); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// serveMetrics serves the API, metrics and health on MetricsAddr, if set.
func (a *Agent) serveMetrics(s *apiServer) error {
	if a.cfg.MetricsAddr == "" {
		return nil
	}
	tl, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("agent metrics: %w", err)
	}
	s.start(a.httpServer(false), tl)
	return nil
}

// apiIdleTimeout closes a kept-alive API or metrics connection idle this
// long. Without it every client that left a connection open kept a
// goroutine and its buffers in the agent for good: in the 25-agent
// benchmark the lab's pollers had left 284 on the first agent, ~6 MiB of
// its RSS. A Prometheus scrape every 15-30 s keeps its connection.
const apiIdleTimeout = time.Minute

func (a *Agent) httpServer(debug bool) *http.Server {
	idle := apiIdleTimeout
	if a.hooks.apiIdle > 0 {
		idle = a.hooks.apiIdle
	}
	return &http.Server{Handler: a.handler(debug), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: idle}
}

func (s *apiServer) start(srv *http.Server, l net.Listener) {
	s.servers = append(s.servers, srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		srv.Serve(l)
	}()
}
