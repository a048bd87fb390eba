package netlab

// This file breaks the lab's underlay on purpose: latency and loss on a
// node's link, partitions of the switch, and cut cables. Everything happens
// inside the lab's own namespaces.
//
// Latency and loss would be `tc qdisc ... netem`, but kernels built without
// CONFIG_NET_SCH_NETEM (the lab machines' is one) have no netem, and no tc
// action that drops at random either (CONFIG_NET_ACT_GACT). What they do
// have is NFQUEUE (CONFIG_NETFILTER_NETLINK_QUEUE and the xt NFQUEUE
// target) and bridge netfilter, so SetNetem queues what a node sends, as it
// crosses the switch, to a delay line in this process: it drops each packet
// with the loss probability and gives the rest back to the kernel after the
// delay, in order. The kernel cuts GSO super-packets into segments before
// queueing them, so loss applies per wire packet, as on a real link. The
// switch is the place for it, not the node: a packet held inside the node
// would still count against its sender's socket buffer, and TCP small
// queues would then hold a bulk TCP sender to a few packets per delay
// (netem orphans its packets for that reason); the veth crossing into the
// switch has orphaned them already.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
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

// faultState holds a lab's running delay lines, one per shaped node,
// keyed by namespace name.
type faultState struct {
	mu    sync.Mutex
	lines map[string]*delayLine
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
func (n *Node) SetNetem(ctx context.Context, delay time.Duration, lossPercent float64) error {
	l := n.lab
	if l == nil {
		return fmt.Errorf("netlab: netem on %s: not a node of a lab", n.Name)
	}
	if delay < 0 || delay > maxNetemDelay {
		return fmt.Errorf("netlab: netem on %s: delay %v, want 0 to %v", n.Name, delay, maxNetemDelay)
	}
	if !(lossPercent >= 0 && lossPercent <= 100) {
		return fmt.Errorf("netlab: netem on %s: loss %v%%, want 0 to 100", n.Name, lossPercent)
	}
	if delay == 0 && lossPercent == 0 {
		return n.ClearNetem(ctx)
	}
	f := &l.faults
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.lines[n.NS]; ok {
		d.set(delay, lossPercent/100)
		return nil
	}
	queue, err := l.netemQueue(n)
	if err != nil {
		return err
	}
	if err := l.bridgeNetfilter(ctx); err != nil {
		return fmt.Errorf("netlab: netem on %s: %w", n.Name, err)
	}
	d, err := openDelayLine(filepath.Join(NetnsDir, l.Switch), queue)
	if err != nil {
		return fmt.Errorf("netlab: netem on %s: %w", n.Name, err)
	}
	d.set(delay, lossPercent/100)
	d.start()
	if _, err := l.inSwitch(ctx, "iptables", netemRule("-A", n.Port, queue)...); err != nil {
		d.close()
		return fmt.Errorf("netlab: netem on %s: %w", n.Name, err)
	}
	if f.lines == nil {
		f.lines = map[string]*delayLine{}
	}
	f.lines[n.NS] = d
	return nil
}

// ClearNetem removes what SetNetem set; packets still in the delay line are
// delivered first. Clearing an unshaped node does nothing.
func (n *Node) ClearNetem(ctx context.Context) error {
	l := n.lab
	if l == nil {
		return fmt.Errorf("netlab: netem on %s: not a node of a lab", n.Name)
	}
	f := &l.faults
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.lines[n.NS]
	if !ok {
		return nil
	}
	delete(f.lines, n.NS)
	_, err := l.inSwitch(ctx, "iptables", netemRule("-D", n.Port, d.queue)...)
	d.close()
	if err != nil {
		return fmt.Errorf("netlab: clear netem on %s: %w", n.Name, err)
	}
	return nil
}

// netemQueue is the NFQUEUE number for node n's delay line in the switch
// namespace: one queue per node.
func (l *Lab) netemQueue(n *Node) (uint16, error) {
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
func (l *Lab) bridgeNetfilter(ctx context.Context) error {
	const key = "net.bridge.bridge-nf-call-iptables"
	out, err := l.inSwitch(ctx, "sysctl", "-n", key)
	if err != nil {
		return fmt.Errorf("bridge netfilter (br_netfilter) unavailable: %w", err)
	}
	if strings.TrimSpace(string(out)) == "1" {
		return nil
	}
	_, err = l.inSwitch(ctx, "sysctl", "-q", "-w", key+"=1")
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

// close stops every delay line; Lab.Close calls it before the namespaces
// go (an open netlink socket would keep a deleted namespace alive).
func (f *faultState) close() {
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
func (l *Lab) Partition(ctx context.Context, groups ...[]*Node) error {
	seen := map[*Node]bool{}
	for _, g := range groups {
		for _, n := range g {
			if !l.has(n) {
				return fmt.Errorf("netlab: partition: %s is not a node of lab %s", n.Name, l.ID)
			}
			if seen[n] {
				return fmt.Errorf("netlab: partition: %s is in two groups", n.Name)
			}
			seen[n] = true
		}
	}
	if err := l.Heal(ctx); err != nil {
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
	if err := ipBatch(ctx, l.Switch, cmds); err != nil {
		return fmt.Errorf("netlab: partition: %w", err)
	}
	l.log.Debug("lab partitioned", "id", l.ID, "groups", len(groups))
	return nil
}

// Heal puts every node's port back on the main bridge and removes the
// partition bridges.
func (l *Lab) Heal(ctx context.Context) error {
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
	if err := ipBatch(ctx, l.Switch, cmds); err != nil {
		return fmt.Errorf("netlab: heal: %w", err)
	}
	return nil
}

// Cut takes the node's port on the switch down: its cable is pulled, in
// both directions, while everything inside the node keeps running.
func (l *Lab) Cut(ctx context.Context, n *Node) error {
	return l.setPort(ctx, n, "down")
}

// Uncut brings the node's port up again.
func (l *Lab) Uncut(ctx context.Context, n *Node) error {
	return l.setPort(ctx, n, "up")
}

func (l *Lab) setPort(ctx context.Context, n *Node, state string) error {
	if !l.has(n) {
		return fmt.Errorf("netlab: set port %s: %s is not a node of lab %s", state, n.Name, l.ID)
	}
	if err := ipBatch(ctx, l.Switch, []string{"link set " + n.Port + " " + state}); err != nil {
		return fmt.Errorf("netlab: set port of %s %s: %w", n.Name, state, err)
	}
	return nil
}

// has reports whether n is one of the lab's nodes.
func (l *Lab) has(n *Node) bool {
	for _, m := range l.Nodes {
		if m == n {
			return true
		}
	}
	return false
}

// The NFQUEUE side of nfnetlink, from include/uapi/linux/netfilter/
// nfnetlink_queue.h. Message types are (subsystem << 8) | message.
const (
	nfqnlMsgPacket  = unix.NFNL_SUBSYS_QUEUE<<8 | 0 // NFQNL_MSG_PACKET
	nfqnlMsgVerdict = unix.NFNL_SUBSYS_QUEUE<<8 | 1 // NFQNL_MSG_VERDICT
	nfqnlMsgConfig  = unix.NFNL_SUBSYS_QUEUE<<8 | 2 // NFQNL_MSG_CONFIG

	nfqaPacketHdr      = 1 // NFQA_PACKET_HDR: be32 id, be16 hw proto, u8 hook
	nfqaVerdictHdr     = 2 // NFQA_VERDICT_HDR: be32 verdict, be32 id
	nfqaCfgCmd         = 1 // NFQA_CFG_CMD: u8 command, u8 pad, be16 pf
	nfqaCfgParams      = 2 // NFQA_CFG_PARAMS: be32 copy range, u8 copy mode
	nfqaCfgQueueMaxLen = 3 // NFQA_CFG_QUEUE_MAXLEN: be32

	nfqnlCfgCmdBind = 1 // NFQNL_CFG_CMD_BIND
	nfqnlCopyMeta   = 1 // NFQNL_COPY_META: no payload, the id is all we need

	nfDrop   = 0 // NF_DROP
	nfAccept = 1 // NF_ACCEPT

	// delayLineMaxLen is how many packets the kernel holds for the line;
	// more are dropped, as a full queue on a real link would.
	delayLineMaxLen = 16384
)

// delayLine is one NFQUEUE consumer: it reads queued packets' ids, drops
// some, and accepts the rest once their delay has passed.
type delayLine struct {
	conn  *netlink.Conn
	queue uint16

	mu      sync.Mutex
	delay   time.Duration
	loss    float64 // probability, 0 to 1
	pending []heldPacket

	wake    chan struct{}
	done    chan struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
	once    sync.Once
}

type heldPacket struct {
	id  uint32
	due time.Time
}

// openDelayLine binds NFQUEUE queue in the namespace at nsPath.
func openDelayLine(nsPath string, queue uint16) (*delayLine, error) {
	f, err := os.Open(nsPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		return nil, fmt.Errorf("nfqueue: dial: %w", err)
	}
	// A burst larger than the socket buffer would otherwise fail the read
	// with ENOBUFS; the kernel drops what it cannot deliver instead.
	conn.SetOption(netlink.NoENOBUFS, true)
	conn.SetReadBuffer(8 << 20)
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Bytes(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0})
	ae.Bytes(nfqaCfgParams, []byte{0, 0, 0, 0, nfqnlCopyMeta})
	ae.Uint32(nfqaCfgQueueMaxLen, delayLineMaxLen)
	attrs, err := ae.Encode()
	if err != nil {
		conn.Close()
		return nil, err
	}
	if _, err := conn.Execute(netlink.Message{
		Header: netlink.Header{Type: nfqnlMsgConfig, Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(nfgenmsg(queue), attrs...),
	}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nfqueue: bind queue %d: %w", queue, err)
	}
	return &delayLine{conn: conn, queue: queue, wake: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

// nfgenmsg is the nfnetlink header: family AF_UNSPEC, version 0, and the
// queue number as resource id.
func nfgenmsg(queue uint16) []byte {
	return []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(queue >> 8), byte(queue)}
}

func (d *delayLine) set(delay time.Duration, loss float64) {
	d.mu.Lock()
	d.delay, d.loss = delay, loss
	d.mu.Unlock()
}

func (d *delayLine) start() {
	d.wg.Add(2)
	go d.read()
	go d.release()
}

// read takes queued packets from the kernel until the socket is closed.
func (d *delayLine) read() {
	defer d.wg.Done()
	failures := 0
	for {
		msgs, err := d.conn.Receive()
		if err != nil {
			// An error reply to a verdict for a packet the kernel no
			// longer holds is not fatal; a closed socket, or a run of
			// failures that says the socket is broken, ends the line.
			if failures++; d.closing.Load() || failures > 100 {
				return
			}
			continue
		}
		failures = 0
		now := time.Now()
		var drops []uint32
		d.mu.Lock()
		for _, m := range msgs {
			id, ok := packetID(m)
			if !ok {
				continue
			}
			if d.loss > 0 && rand.Float64() < d.loss {
				drops = append(drops, id)
				continue
			}
			d.pending = append(d.pending, heldPacket{id: id, due: now.Add(d.delay)})
		}
		d.mu.Unlock()
		if len(drops) > 0 {
			d.verdict(nfDrop, drops)
		}
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// packetID returns the queue id of a packet message.
func packetID(m netlink.Message) (uint32, bool) {
	if m.Header.Type != nfqnlMsgPacket || len(m.Data) < 4 {
		return 0, false
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return 0, false
	}
	for ad.Next() {
		if ad.Type() == nfqaPacketHdr {
			if b := ad.Bytes(); len(b) >= 4 {
				return binary.BigEndian.Uint32(b), true
			}
		}
	}
	return 0, false
}

// release accepts held packets as they fall due. On close it accepts all
// that are left.
func (d *delayLine) release() {
	defer d.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		d.mu.Lock()
		i := 0
		for i < len(d.pending) && !d.pending[i].due.After(now) {
			i++
		}
		due := make([]uint32, i)
		for j := range due {
			due[j] = d.pending[j].id
		}
		d.pending = d.pending[i:]
		next := time.Hour
		if len(d.pending) > 0 {
			next = d.pending[0].due.Sub(now)
		}
		d.mu.Unlock()
		if len(due) > 0 {
			d.verdict(nfAccept, due)
		}
		timer.Reset(next)
		select {
		case <-d.done:
			d.mu.Lock()
			rest := make([]uint32, len(d.pending))
			for j, p := range d.pending {
				rest[j] = p.id
			}
			d.pending = nil
			d.mu.Unlock()
			d.verdict(nfAccept, rest)
			return
		case <-d.wake:
		case <-timer.C:
		}
	}
}

// verdict tells the kernel what to do with the packets, in batches of
// sendmsg calls.
func (d *delayLine) verdict(v uint32, ids []uint32) {
	const batch = 256
	for len(ids) > 0 {
		k := min(len(ids), batch)
		msgs := make([]netlink.Message, k)
		for i, id := range ids[:k] {
			data := nfgenmsg(d.queue)
			// One attribute: 4-byte header (length 12, type), then the
			// verdict header.
			data = binary.NativeEndian.AppendUint16(data, 12)
			data = binary.NativeEndian.AppendUint16(data, nfqaVerdictHdr)
			data = binary.BigEndian.AppendUint32(data, v)
			data = binary.BigEndian.AppendUint32(data, id)
			msgs[i] = netlink.Message{Header: netlink.Header{Type: nfqnlMsgVerdict, Flags: netlink.Request}, Data: data}
		}
		d.conn.SendMessages(msgs)
		ids = ids[k:]
	}
}

// close lets the held packets go and closes the queue. The caller has
// removed the rule that feeds it (or is deleting the namespace).
func (d *delayLine) close() {
	d.once.Do(func() {
		// Packets that were on their way into the queue when the rule went
		// still arrive: pass them on with no delay, for a moment, before
		// the socket closes (which drops whatever the queue holds).
		d.set(0, 0)
		close(d.done)
		grace := time.Now().Add(100 * time.Millisecond)
		for time.Now().Before(grace) {
			time.Sleep(10 * time.Millisecond)
			d.mu.Lock()
			n := len(d.pending)
			d.mu.Unlock()
			if n > 0 {
				d.verdict(nfAccept, d.takePending())
			}
		}
		d.closing.Store(true)
		d.conn.Close()
		d.wg.Wait()
	})
}

func (d *delayLine) takePending() []uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]uint32, len(d.pending))
	for i, p := range d.pending {
		ids[i] = p.id
	}
	d.pending = nil
	return ids
}

// inSwitch runs a command in the switch namespace and returns its
// standard output.
func (l *Lab) inSwitch(ctx context.Context, name string, args ...string) ([]byte, error) {
	return output(ctx, "ip", append([]string{"netns", "exec", l.Switch, name}, args...)...)
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
