package faults

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
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

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
