package netlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/agent/api"
)

// AgentPort is the gossip port lab agents bind on their node's underlay address.
const AgentPort = 7946

// AgentConfig describes one `weft agent` process in a lab node.
type AgentConfig struct {
	// Bin is the weft binary.
	Bin string
	// Dir holds the agent's state dir, socket and log; it is created.
	Dir string
	// GossipKeyFile is passed as --gossip-key-file when set.
	GossipKeyFile string
	// Join is the node to join, nil for the first agent.
	Join *Node
	// Extra flags appended to the command line.
	Extra []string
}

// Agent is one `weft agent` process running in a lab node. Lab nodes share
// one filesystem, so each agent gets its own interface name, state dir and
// socket: with one /var/run and one state directory tree for all, names
// are what keeps agents apart.
type Agent struct {
	Node *Node
	Dir  string
	Args []string
	bin  string
	process
}

// StartAgent starts `weft agent` in node.
func (l *Lab) StartAgent(node *Node, cfg AgentConfig) (*Agent, error) {
	a := &Agent{Node: node, Dir: cfg.Dir, bin: cfg.Bin}
	a.Args = []string{"agent",
		"--node-name", node.Name,
		"--bind", fmt.Sprintf("%s:%d", node.Addr(), AgentPort),
		"--interface", l.AgentInterface(node),
		"--state-dir", filepath.Join(a.Dir, "state"),
		"--socket", a.Socket(),
		"--metrics-addr", "",
		"--log-level", "debug",
	}
	if cfg.GossipKeyFile != "" {
		a.Args = append(a.Args, "--gossip-key-file", cfg.GossipKeyFile)
	}
	if cfg.Join != nil {
		a.Args = append(a.Args, "--join", fmt.Sprintf("%s:%d", cfg.Join.Addr(), AgentPort))
	}
	a.Args = append(a.Args, cfg.Extra...)
	return a, a.Start()
}

// AgentInterface is the WireGuard interface name of node's agent: unique per
// lab and node, because userspace devices' UAPI sockets share one directory.
func (l *Lab) AgentInterface(node *Node) string { return "wf" + l.ID + "-" + node.Name }

// Socket is the agent's local API socket.
func (a *Agent) Socket() string { return filepath.Join(a.Dir, "agent.sock") }

// Interface is the agent's WireGuard interface name.
func (a *Agent) Interface() string {
	for i, s := range a.Args {
		if s == "--interface" && i+1 < len(a.Args) {
			return a.Args[i+1]
		}
	}
	return ""
}

// Start (re)starts the process with the same arguments, its output appended
// to agent.log in Dir.
func (a *Agent) Start() error {
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(a.Dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	a.cmd = exec.Command("ip", append([]string{"netns", "exec", a.Node.NS, a.bin}, a.Args...)...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start agent in %s: %w", a.Node.Name, err)
	}
	done := make(chan struct{})
	a.done = done
	cmd := a.cmd
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	return nil
}

// LogTail is the last few KiB of the agent's log.
func (a *Agent) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(a.Dir, "agent.log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// Status asks the agent's local API for its report.
func (a *Agent) Status() (api.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return api.NewClient(a.Socket()).Status(ctx)
}

// Metrics returns the agent's /metrics text, "" when unreachable.
func (a *Agent) Metrics() string { return a.Get("/metrics") }

// Get returns the body of path on the agent's local API, "" when
// unreachable.
func (a *Agent) Get(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b, _ := api.NewClient(a.Socket()).Get(ctx, path)
	return string(b)
}
