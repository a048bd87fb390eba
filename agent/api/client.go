package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

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
