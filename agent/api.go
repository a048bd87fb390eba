package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/weftnet/weft/tunnel"
)

// Report is what the local API's GET /v1/status returns: the node, every
// member with its lease and, where it is a peer, the WireGuard counters.
type Report struct {
	Self          SelfReport       `json:"self"`
	Members       []MemberReport   `json:"members"`
	Conflicts     []ConflictReport `json:"conflicts"`
	Ready         bool             `json:"ready"`
	LastReconcile time.Time        `json:"last_reconcile"`
	LastError     string           `json:"last_error,omitempty"`
}

// SelfReport describes this node.
type SelfReport struct {
	Name            string `json:"name"`
	Mode            string `json:"mode"`
	Interface       string `json:"interface"`
	PublicKey       string `json:"public_key"`
	Fingerprint     string `json:"fingerprint"`
	Endpoint        string `json:"endpoint,omitempty"`
	Block           string `json:"block,omitempty"`
	Address         string `json:"address,omitempty"`
	MTU             int    `json:"mtu"`
	GossipEncrypted bool   `json:"gossip_encrypted"`
}

// MemberReport is one member as this node sees it.
type MemberReport struct {
	Name      string      `json:"name"`
	State     string      `json:"state"`
	Since     time.Time   `json:"since"`
	Mode      string      `json:"mode,omitempty"`
	Endpoint  string      `json:"endpoint,omitempty"`
	Block     string      `json:"block,omitempty"`
	OwnsBlock bool        `json:"owns_block"`
	PublicKey string      `json:"public_key,omitempty"`
	TagsError string      `json:"tags_error,omitempty"`
	Peer      *PeerReport `json:"peer,omitempty"`
}

// PeerReport is the WireGuard side of a member that is a peer.
type PeerReport struct {
	Endpoint      string    `json:"endpoint,omitempty"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	RxBytes       int64     `json:"rx_bytes"`
	TxBytes       int64     `json:"tx_bytes"`
}

// ConflictReport is a lease conflict this node lost.
type ConflictReport struct {
	Block  string `json:"block"`
	Winner string `json:"winner"`
	Loser  string `json:"loser"`
}

// Lease is GET /v1/lease: what the CNI plugin needs to address pods.
type Lease struct {
	Block   string `json:"block"`
	Gateway string `json:"node_address"`
	MTU     int    `json:"mtu"`
	// Ready is false while the agent has no device, no lease, or is
	// re-leasing after a conflict.
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

// Report builds the current status report.
func (a *Agent) Report() Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Report{
		Ready:         a.ready,
		LastReconcile: a.last.at,
		Self: SelfReport{
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
		st.Self.Address = NodeAddress(a.tags.Block).String()
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
		ms := MemberReport{Name: m.Name, State: m.Status.String(), Since: m.Since}
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
				ps := &PeerReport{LastHandshake: p.LastHandshake, RxBytes: p.RxBytes, TxBytes: p.TxBytes}
				if p.Endpoint.IsValid() {
					ps.Endpoint = p.Endpoint.String()
				}
				ms.Peer = ps
			}
		}
		st.Members = append(st.Members, ms)
	}
	for _, c := range a.conflicts {
		st.Conflicts = append(st.Conflicts, ConflictReport{Block: c.Block.String(), Winner: c.Winner, Loser: c.Loser})
	}
	return st
}

// Lease reports the node's lease for the CNI plugin.
func (a *Agent) Lease() Lease {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := Lease{MTU: a.cfg.MTU}
	if a.tags.Block.IsValid() {
		l.Block = a.tags.Block.String()
		l.Gateway = NodeAddress(a.tags.Block).String()
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
	if a.apiIdle > 0 {
		idle = a.apiIdle
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

// Client talks to an agent's local API.
type Client struct {
	Socket string
	HTTP   *http.Client
}

// NewClient returns a client for the socket with a short timeout. Each
// request has a connection of its own, closed after the reply: a local
// socket costs nothing to dial, and a kept-alive connection of a client
// that is dropped (a CLI, a poller making a client per call) would stay
// open in the agent until its idle timeout.
func NewClient(socket string) *Client {
	return &Client{Socket: socket, HTTP: &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		},
	}}
}

// Get fetches path from the agent's API and returns the body of a 200
// reply: the JSON documents, /metrics, or Go's profiles under
// /debug/pprof/ (a CPU profile takes its seconds; set HTTP.Timeout to 0).
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent at %s: %w", c.Socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent at %s: %s", c.Socket, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("agent at %s: %w", c.Socket, err)
	}
	return b, nil
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	b, err := c.Get(ctx, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("agent at %s: bad reply: %w", c.Socket, err)
	}
	return nil
}

// Status fetches GET /v1/status.
func (c *Client) Status(ctx context.Context) (Report, error) {
	var s Report
	return s, c.get(ctx, "/v1/status", &s)
}

// Lease fetches GET /v1/lease.
func (c *Client) Lease(ctx context.Context) (Lease, error) {
	var l Lease
	return l, c.get(ctx, "/v1/lease", &l)
}
