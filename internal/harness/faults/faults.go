package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// mainBridge is the bridge in the switch namespace every node's port is on
// while the lab is whole.
const mainBridge = "br0"

// partitionBridgePrefix names the extra bridges Partition creates in the
// switch namespace: part1, part2, ...
const partitionBridgePrefix = "part"

// netemQueueBase is the NFQUEUE number of the first node's delay line in
// the switch namespace; node i (0-based) uses netemQueueBase+i.
const netemQueueBase = 2718

// netemComment marks the iptables rule SetNetem adds, so it is recognisable
// in `iptables -S` and removed by exactly the same specification.
const netemComment = "weft-netlab-netem"

// maxNetemDelay bounds SetNetem's delay: the delay line holds every packet
// in memory for that long.
const maxNetemDelay = 10 * time.Second

// shaping holds one lab's running delay lines, one per shaped node, keyed
// by namespace name.
type shaping struct {
	mu    sync.Mutex
	lines map[string]*delayLine
}

// labs holds the shaping of every lab SetNetem was used on; the entry goes
// when the lab closes.
var labs struct {
	mu sync.Mutex
	m  map[*netlab.Lab]*shaping
}

// shapingOf returns lab's shaping, created (and registered to stop when
// the lab closes) on first use.
func shapingOf(lab *netlab.Lab) *shaping {
	labs.mu.Lock()
	defer labs.mu.Unlock()
	if f, ok := labs.m[lab]; ok {
		return f
	}
	f := &shaping{lines: map[string]*delayLine{}}
	if labs.m == nil {
		labs.m = map[*netlab.Lab]*shaping{}
	}
	labs.m[lab] = f
	lab.OnClose(func() {
		f.close()
		labs.mu.Lock()
		delete(labs.m, lab)
		labs.mu.Unlock()
	})
	return f
}

// SetNetem makes the node's underlay link slow and lossy: every IPv4 packet
// the node sends is dropped with probability lossPercent/100 and otherwise
// delivered after delay. The shaping happens where the node's cable enters
// the switch (its port, in the switch namespace), on the way from the node,
// so nothing inside the node changes. Only what the node sends is shaped,
// as `tc qdisc add dev eth0 root netem` on the node would: a packet between
// two shaped nodes is delayed once and has one chance of loss, and a ping
// between a shaped and an unshaped node sees the delay once per round
// trip. ARP and IPv6 are not shaped. Calling it again changes the figures;
// delay and loss both zero is ClearNetem. Shaping survives Partition, Heal
// and Cut.
func SetNetem(ctx context.Context, l *netlab.Lab, n *netlab.Node, delay time.Duration, lossPercent float64) error {
	if delay < 0 || delay > maxNetemDelay {
		return fmt.Errorf("netlab: netem on %s: delay %v, want 0 to %v", n.Name, delay, maxNetemDelay)
	}
	if !(lossPercent >= 0 && lossPercent <= 100) {
		return fmt.Errorf("netlab: netem on %s: loss %v%%, want 0 to 100", n.Name, lossPercent)
	}
	if delay == 0 && lossPercent == 0 {
		return ClearNetem(ctx, l, n)
	}
	queue, err := netemQueue(l, n)
	if err != nil {
		return err
	}
	f := shapingOf(l)
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.lines[n.NS]; ok {
		d.set(delay, lossPercent/100)
		return nil
	}
	if err := bridgeNetfilter(ctx, l); err != nil {
		return fmt.Errorf("netlab: netem on %s: %w", n.Name, err)
	}
	d, err := openDelayLine(filepath.Join(netlab.NetnsDir, l.Switch), queue)
	if err != nil {
		return fmt.Errorf("netlab: netem on %s: %w", n.Name, err)
	}
	d.set(delay, lossPercent/100)
	d.start()
	if _, err := inSwitch(ctx, l, "iptables", netemRule("-A", n.Port, queue)...); err != nil {
		d.close()
		return fmt.Errorf("netlab: netem on %s: %w", n.Name, err)
	}
	f.lines[n.NS] = d
	return nil
}

// ClearNetem removes what SetNetem set; packets still in the delay line are
// delivered first. Clearing an unshaped node does nothing.
func ClearNetem(ctx context.Context, l *netlab.Lab, n *netlab.Node) error {
	if !has(l, n) {
		return fmt.Errorf("netlab: netem on %s: not a node of lab %s", n.Name, l.ID)
	}
	labs.mu.Lock()
	f, ok := labs.m[l]
	labs.mu.Unlock()
	if !ok {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.lines[n.NS]
	if !ok {
		return nil
	}
	delete(f.lines, n.NS)
	_, err := inSwitch(ctx, l, "iptables", netemRule("-D", n.Port, d.queue)...)
	d.close()
	if err != nil {
		return fmt.Errorf("netlab: clear netem on %s: %w", n.Name, err)
	}
	return nil
}

// netemQueue is the NFQUEUE number for node n's delay line in the switch
// namespace: one queue per node.
func netemQueue(l *netlab.Lab, n *netlab.Node) (uint16, error) {
	for i, m := range l.Nodes {
		if m == n {
			return uint16(netemQueueBase + i), nil
		}
	}
	return 0, fmt.Errorf("netlab: netem on %s: not a node of lab %s", n.Name, l.ID)
}

// bridgeNetfilter makes bridged IPv4 traffic in the switch namespace pass
// iptables, where the NFQUEUE rules are. The setting is per namespace
// (Linux 5.3 and later) and on by default where br_netfilter is loaded.
func bridgeNetfilter(ctx context.Context, l *netlab.Lab) error {
	const key = "net.bridge.bridge-nf-call-iptables"
	out, err := inSwitch(ctx, l, "sysctl", "-n", key)
	if err != nil {
		return fmt.Errorf("bridge netfilter (br_netfilter) unavailable: %w", err)
	}
	if strings.TrimSpace(string(out)) == "1" {
		return nil
	}
	_, err = inSwitch(ctx, l, "sysctl", "-q", "-w", key+"=1")
	return err
}

// netemRule is the iptables command line that adds (-A) or deletes (-D)
// the rule queueing what enters the switch from port. --queue-bypass lets
// packets through, unshaped, should the delay line be gone.
func netemRule(op, port string, queue uint16) []string {
	return []string{"-w", "10", "-t", "mangle", op, "FORWARD",
		"-m", "physdev", "--physdev-in", port,
		"-m", "comment", "--comment", netemComment,
		"-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(queue)), "--queue-bypass"}
}

// close stops every delay line; the lab's Close calls it (OnClose) before
// the namespaces go (an open netlink socket would keep a deleted namespace
// alive).
func (f *shaping) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ns, d := range f.lines {
		d.close()
		delete(f.lines, ns)
	}
}

// Partition splits the underlay: each group's ports move to a bridge of
// its own in the switch namespace (part1, part2, ...), so nodes reach the
// nodes of their group and no others. Nodes in no group stay on the main
// bridge, together. A partition replaces any earlier one; Heal undoes it.
// Cut ports stay cut.
func Partition(ctx context.Context, l *netlab.Lab, groups ...[]*netlab.Node) error {
	seen := map[*netlab.Node]bool{}
	for _, g := range groups {
		for _, n := range g {
			if !has(l, n) {
				return fmt.Errorf("netlab: partition: %s is not a node of lab %s", n.Name, l.ID)
			}
			if seen[n] {
				return fmt.Errorf("netlab: partition: %s is in two groups", n.Name)
			}
			seen[n] = true
		}
	}
	if err := Heal(ctx, l); err != nil {
		return err
	}
	var cmds []string
	for i, g := range groups {
		br := fmt.Sprintf("%s%d", partitionBridgePrefix, i+1)
		cmds = append(cmds, "link add "+br+" type bridge", "link set "+br+" up")
		for _, n := range g {
			cmds = append(cmds, "link set "+n.Port+" master "+br)
		}
	}
	if len(cmds) == 0 {
		return nil
	}
	if err := switchBatch(ctx, l, cmds); err != nil {
		return fmt.Errorf("netlab: partition: %w", err)
	}
	l.Logger().Debug("lab partitioned", "id", l.ID, "groups", len(groups))
	return nil
}

// Heal puts every node's port back on the main bridge and removes the
// partition bridges.
func Heal(ctx context.Context, l *netlab.Lab) error {
	out, err := output(ctx, "ip", "-n", l.Switch, "-j", "link", "show", "type", "bridge")
	if err != nil {
		return fmt.Errorf("netlab: heal: %w", err)
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return fmt.Errorf("netlab: heal: bridges of %s: %w", l.Switch, err)
	}
	var cmds []string
	for _, n := range l.Nodes {
		cmds = append(cmds, "link set "+n.Port+" master "+mainBridge)
	}
	for _, br := range links {
		if br.Name != mainBridge {
			cmds = append(cmds, "link del "+br.Name)
		}
	}
	if err := switchBatch(ctx, l, cmds); err != nil {
		return fmt.Errorf("netlab: heal: %w", err)
	}
	return nil
}

// Cut takes the node's port on the switch down: its cable is pulled, in
// both directions, while everything inside the node keeps running.
func Cut(ctx context.Context, l *netlab.Lab, n *netlab.Node) error {
	return setPort(ctx, l, n, "down")
}

// Uncut brings the node's port up again.
func Uncut(ctx context.Context, l *netlab.Lab, n *netlab.Node) error {
	return setPort(ctx, l, n, "up")
}

func setPort(ctx context.Context, l *netlab.Lab, n *netlab.Node, state string) error {
	if !has(l, n) {
		return fmt.Errorf("netlab: set port %s: %s is not a node of lab %s", state, n.Name, l.ID)
	}
	if err := switchBatch(ctx, l, []string{"link set " + n.Port + " " + state}); err != nil {
		return fmt.Errorf("netlab: set port of %s %s: %w", n.Name, state, err)
	}
	return nil
}

// has reports whether n is one of the lab's nodes.
func has(l *netlab.Lab, n *netlab.Node) bool {
	for _, m := range l.Nodes {
		if m == n {
			return true
		}
	}
	return false
}

// inSwitch runs a command in the switch namespace and returns its
// standard output.
func inSwitch(ctx context.Context, l *netlab.Lab, name string, args ...string) ([]byte, error) {
	return output(ctx, "ip", append([]string{"netns", "exec", l.Switch, name}, args...)...)
}

// switchBatch runs `ip -batch` with the given commands in the switch
// namespace.
func switchBatch(ctx context.Context, l *netlab.Lab, cmds []string) error {
	c := exec.CommandContext(ctx, "ip", "-n", l.Switch, "-batch", "-")
	c.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("in %s: %w: %s", l.Switch, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// output runs a command (outside any namespace: `ip -n` enters one) and
// returns its standard output.
func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
		return out, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out, nil
}
