// Package demo is `weft demo`: it builds a namespace lab, runs a `weft
// agent` on every node, adds pods through the CNI plugin, waits for the mesh
// to form, proves pod-to-pod traffic works and is encrypted on the underlay,
// measures it, and removes everything it made, printing what it does.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/agent/api"
	"github.com/weftnet/weft/internal/bench"
	"github.com/weftnet/weft/internal/netlab"
)

// Options for a demo run.
type Options struct {
	// Bin is the weft binary the agents and the CNI plugin run (the demo's
	// own executable).
	Bin string
	// Nodes in the lab (default 3, at least 2).
	Nodes int
	// Pods per node (default 2).
	Pods int
	// Mode is the agents' --mode (default auto: kernel where the module
	// exists, else tun).
	Mode string
	// TransferMiB is the size of the hashed pod-to-pod transfer (default 32).
	TransferMiB int
	// Keep leaves the lab up until ctx is cancelled.
	Keep bool
	// Terminal redraws the progress line in place with \r; otherwise each
	// change is a line of its own.
	Terminal bool
	Out      io.Writer
	Logger   *slog.Logger
}

// TempPrefix starts the name of the temporary directory a demo owns (in
// os.TempDir()); `weft demo --down` removes those of dead demos.
const TempPrefix = "weft-demo-"

// pidFile, in the demo's temporary directory, holds the demo's pid and then
// one agent pid a line, for --down.
const pidFile = "pids"

// marker is plaintext the pods send; the underlay capture must not hold it.
const marker = "WEFT-DEMO-PLAINTEXT"

// demo is one run's state.
type demo struct {
	o     Options
	w     io.Writer
	lab   *netlab.Lab
	dir   string
	mesh  *netlab.Mesh
	pods  [][]*netlab.Pod // by node
	fails []string
	sum   []string
	// pcap is the capture of the first node's underlay, running from before
	// the agents start until stopCapture.
	pcap        string
	stopCapture func()
}

func (d *demo) step(format string, a ...any) { fmt.Fprintf(d.w, "==> "+format+"\n", a...) }
func (d *demo) ok(format string, a ...any)   { fmt.Fprintf(d.w, "    ok: "+format+"\n", a...) }
func (d *demo) info(format string, a ...any) { fmt.Fprintf(d.w, "    "+format+"\n", a...) }

// fail records a failed check and carries on: the run shows every check
// and exits non-zero at the end.
func (d *demo) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	d.fails = append(d.fails, msg)
	fmt.Fprintf(d.w, "    FAIL: %s\n", msg)
}

// Run runs the demo. It returns an error if any check fails, after
// removing everything it made.
func Run(ctx context.Context, o Options) (err error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Pods == 0 {
		o.Pods = 2
	}
	if o.TransferMiB == 0 {
		o.TransferMiB = 32
	}
	if o.Mode == "" {
		o.Mode = "auto"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Nodes < 2 || o.Nodes > 50 || o.Pods < 1 || o.Pods > 50 {
		return fmt.Errorf("demo: %d nodes with %d pods each: want 2-50 nodes and 1-50 pods", o.Nodes, o.Pods)
	}
	if o.Bin == "" {
		return errors.New("demo: no weft binary")
	}
	d := &demo{o: o, w: o.Out}
	defer func() {
		if cerr := d.cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		if err == nil && len(d.fails) > 0 {
			err = fmt.Errorf("%d check(s) failed: %s", len(d.fails), strings.Join(d.fails, "; "))
		}
		if err == nil {
			fmt.Fprintln(d.w, "==> all checks passed")
		}
	}()
	return d.run(ctx)
}

func (d *demo) run(ctx context.Context) error {
	if err := d.buildLab(ctx); err != nil {
		return err
	}
	p := &progress{w: d.w, terminal: d.o.Terminal}
	agentsStarted, err := d.startAgents(ctx, p)
	if err != nil {
		return err
	}
	if err := d.addPods(ctx); err != nil {
		return err
	}
	if err := d.waitHandshakes(ctx, p, agentsStarted); err != nil {
		return err
	}
	for _, show := range []func(context.Context) error{d.showStatus, d.traffic, d.throughput} {
		if err := show(ctx); err != nil {
			return err
		}
	}
	if d.o.Keep {
		d.step("lab kept up; enter a pod with: ip netns exec %s bash   (Ctrl-C to tear down)", d.pods[0][0].NS)
		<-ctx.Done()
	}
	d.step("summary")
	for _, s := range d.sum {
		d.info("%s", s)
	}
	return nil
}

// buildLab builds the lab and the demo's directory, and starts capturing
// the first node's underlay.
func (d *demo) buildLab(ctx context.Context) error {
	d.step("building a %d-node lab: network namespaces on a bridge, underlay 198.18.0.0/15", d.o.Nodes)
	lab, err := netlab.New(ctx, netlab.Config{Nodes: d.o.Nodes, Logger: d.o.Logger})
	if err != nil {
		return err
	}
	d.lab = lab
	d.info("lab id %s", lab.ID)
	for _, n := range lab.Nodes {
		d.ok("node %s: netns %s, eth0 %s", n.Name, n.NS, n.Underlay)
	}
	if d.dir, err = os.MkdirTemp("", TempPrefix+lab.ID+"-"); err != nil {
		return err
	}
	if err := d.writePids(); err != nil {
		return err
	}

	d.step("capturing %s's underlay (eth0) from now until the pod traffic is done", lab.Nodes[0].Name)
	if d.pcap, d.stopCapture, err = capture(ctx, lab.Nodes[0], d.dir); err != nil {
		return err
	}
	d.ok("tcpdump listening, writing %s", d.pcap)
	return nil
}

// startAgents starts `weft agent` on every node and waits until every
// agent sees every member and lease; it returns when the agents started.
func (d *demo) startAgents(ctx context.Context, p *progress) (time.Time, error) {
	o := d.o
	d.step("starting `weft agent` on every node (gossip key generated in %s)", d.dir)
	var err error
	d.mesh, err = d.lab.StartMesh(netlab.MeshConfig{
		Bin: o.Bin, Dir: filepath.Join(d.dir, "mesh"), Mode: o.Mode,
		Extra: []string{"--gossip-profile", "local"},
	})
	if err != nil {
		return time.Time{}, err
	}
	started := time.Now()
	if err := d.writePids(); err != nil {
		return started, err
	}
	for _, a := range d.mesh.Agents {
		d.ok("%s: pid %d, interface %s, socket %s", a.Node.Name, a.Pid(), a.Interface(), a.Socket())
	}
	want := meshGoal{members: o.Nodes, leases: o.Nodes}
	if err := p.wait(ctx, d.mesh, want, 60*time.Second, nil); err != nil {
		return started, d.withLogs(err)
	}
	return started, nil
}

// addPods adds o.Pods pods on every node through the CNI plugin.
func (d *demo) addPods(ctx context.Context) error {
	d.step("adding %d pod(s) per node through the CNI plugin (libcni ADD, conflist in %s)", d.o.Pods, filepath.Join(d.dir, "mesh"))
	for _, rt := range d.mesh.Runtimes {
		var pods []*netlab.Pod
		for i := 1; i <= d.o.Pods; i++ {
			pod, err := rt.AddPod(ctx, "p"+strconv.Itoa(i))
			if err != nil {
				return err
			}
			d.ok("%s: %s, netns %s, host veth %s", pod.Name, pod.Addr(), pod.NS, pod.HostVeth)
			pods = append(pods, pod)
		}
		d.pods = append(d.pods, pods)
	}
	return nil
}

// waitHandshakes waits for a WireGuard handshake between every pair of
// nodes, with pod traffic to prompt them, and notes how long the mesh
// took to form since the agents started.
func (d *demo) waitHandshakes(ctx context.Context, p *progress, agentsStarted time.Time) error {
	n := d.o.Nodes
	d.step("waiting for WireGuard handshakes between every pair of nodes")
	want := meshGoal{members: n, leases: n, handshakes: n * (n - 1)}
	poke, stopPoke := d.poker()
	err := p.wait(ctx, d.mesh, want, 60*time.Second, poke)
	stopPoke()
	if err != nil {
		return d.withLogs(err)
	}
	d.sum = append(d.sum, fmt.Sprintf("mesh: %d/%d members alive on every node, %d leases, %d/%d handshakes; formed %.1f s after the agents started",
		n, n, n, want.handshakes, want.handshakes, time.Since(agentsStarted).Seconds()))
	return nil
}

// withLogs adds the tail of every agent's log to err.
func (d *demo) withLogs(err error) error {
	var b strings.Builder
	for _, a := range d.mesh.Agents {
		fmt.Fprintf(&b, "\n--- agent %s log (tail) ---\n%s", a.Node.Name, a.LogTail())
	}
	return fmt.Errorf("%w%s", err, b.String())
}

// showStatus runs `weft status` on the first node, as a person would.
func (d *demo) showStatus(ctx context.Context) error {
	a := d.mesh.Agents[0]
	d.step("weft status --socket %s   (on %s)", a.Socket(), a.Node.Name)
	out, err := a.Node.Run(ctx, d.o.Bin, "status", "--socket", a.Socket())
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		d.info("%s", l)
	}
	st, err := a.Status()
	if err != nil {
		return err
	}
	if !st.Self.GossipEncrypted {
		d.fail("agent on %s reports unencrypted gossip", a.Node.Name)
	}
	alive := 0
	for _, m := range st.Members {
		if m.State == "alive" && m.OwnsBlock {
			alive++
		}
	}
	if alive != d.o.Nodes {
		d.fail("weft status on %s: %d alive members owning their block, want %d", a.Node.Name, alive, d.o.Nodes)
	}
	return nil
}

// cleanup removes everything the run made, in the reverse order: pods
// (DEL), agents, stale UAPI sockets, the lab, the temporary directory.
func (d *demo) cleanup() error {
	if d.lab == nil {
		return nil
	}
	pods := 0
	for _, ps := range d.pods {
		pods += len(ps)
	}
	agents := 0
	if d.mesh != nil {
		agents = len(d.mesh.Agents)
	}
	d.step("cleaning up: DEL %d pod(s), stop %d agent(s), remove the lab and %s", pods, agents, orNone(d.dir))
	var errs []error
	if d.stopCapture != nil {
		d.stopCapture()
	}
	if d.mesh != nil {
		errs = append(errs, d.mesh.Close())
		for _, a := range d.mesh.Agents {
			sock := filepath.Join(WireGuardRunDir, a.Interface()+".sock")
			if removed, err := removeStaleSocket(sock); err != nil {
				errs = append(errs, err)
			} else if removed {
				d.o.Logger.Warn("agent left its UAPI socket behind; removed it", "socket", sock)
			}
		}
	}
	errs = append(errs, d.lab.Close())
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	d.info("removed: namespaces %s-*, agent processes, %s", netlab.NamePrefix+d.lab.ID, orNone(d.dir))
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(no temp dir)"
	}
	return s
}

// writePids records the demo's pid and its agents' for --down.
func (d *demo) writePids() error {
	var b strings.Builder
	fmt.Fprintln(&b, os.Getpid())
	if d.mesh != nil {
		for _, a := range d.mesh.Agents {
			fmt.Fprintln(&b, a.Pid())
		}
	}
	return os.WriteFile(filepath.Join(d.dir, pidFile), []byte(b.String()), 0o600)
}

// side is a pod as one end of a measured path.
func side(p *netlab.Pod) bench.Side { return bench.Side{Node: &p.Node, Addr: p.Addr()} }

// memberKeys lists the public keys of every member, as gossip tags carry
// them (base64): text that would show in an unencrypted gossip capture.
func memberKeys(st api.Report) []string {
	var out []string
	for _, m := range st.Members {
		if m.PublicKey != "" {
			out = append(out, m.PublicKey)
		}
	}
	return out
}
