package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"
)

// store is the node's pod address store: host-local's disk backend, one
// file per address named after it and holding "containerID\r\nifname",
// guarded by a flock on the directory. A reservation is a single
// O_CREAT|O_EXCL, so a plugin killed at any point leaves either no file
// or a file that is visible to DEL and GC: addresses never double and
// leaks are found again.
type store struct {
	disk *disk.Store
	dir  string
}

// allocation is one address file.
type allocation struct {
	Addr        netip.Addr
	ContainerID string
	IfName      string
}

func openStore(dir string) (*store, error) {
	d, err := disk.New(filepath.Base(dir), filepath.Dir(dir))
	if err != nil {
		return nil, fmt.Errorf("address store %s: %w", dir, err)
	}
	return &store{disk: d, dir: dir}, nil
}

func (s *store) Close() error { return s.disk.Close() }

// allocate reserves a free address of block for the attachment. It never
// hands out the network address, the broadcast address or the node's own
// address, and only ever looks inside the current block: addresses of a
// block the node lost stay reserved by their pods until DEL and are not
// handed out again from here.
func (s *store) allocate(block netip.Prefix, node netip.Addr, id, ifname string) (netip.Addr, error) {
	if !block.Addr().Is4() || block.Bits() > 30 || block != block.Masked() {
		return netip.Addr{}, fmt.Errorf("block %s: want an IPv4 network of at least 4 addresses", block)
	}
	r := allocator.Range{
		Subnet:  types.IPNet(net.IPNet{IP: block.Addr().AsSlice(), Mask: net.CIDRMask(block.Bits(), 32)}),
		Gateway: node.AsSlice(),
	}
	if err := r.Canonicalize(); err != nil {
		return netip.Addr{}, fmt.Errorf("block %s: %w", block, err)
	}
	// rangeID names host-local's last_reserved_ip.<id> file, which makes
	// allocation round-robin; one per block keeps a new block from
	// inheriting the old one's cursor.
	rangeID := blockID(block)
	ipc, err := allocator.NewIPAllocator(&allocator.RangeSet{r}, s.disk, rangeID).Get(id, ifname, nil)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate from %s: %w", block, err)
	}
	a, ok := netip.AddrFromSlice(ipc.Address.IP)
	if !ok {
		return netip.Addr{}, fmt.Errorf("allocate from %s: bad address %v", block, ipc.Address.IP)
	}
	a = a.Unmap()
	if a == block.Addr() || a == node || a == lastAddr(block) || !block.Contains(a) {
		// Never reached with host-local's range rules; checked because a
		// wrong answer here is an outage.
		s.release(id, ifname)
		return netip.Addr{}, fmt.Errorf("allocate from %s: got reserved address %s", block, a)
	}
	return a, nil
}

// blockID packs the block into the int host-local wants as a range id.
func blockID(b netip.Prefix) int {
	a := b.Addr().As4()
	return int(uint32(a[0])<<24|uint32(a[1])<<16|uint32(a[2])<<8|uint32(a[3]))<<6 | b.Bits()
}

func lastAddr(b netip.Prefix) netip.Addr {
	a := b.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= ^uint32(0) >> b.Bits()
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lookup returns the addresses reserved for the attachment.
func (s *store) lookup(id, ifname string) ([]netip.Addr, error) {
	if err := s.disk.Lock(); err != nil {
		return nil, err
	}
	defer s.disk.Unlock()
	var out []netip.Addr
	for _, ip := range s.disk.GetByID(id, ifname) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// release frees the attachment's addresses; none is not an error.
func (s *store) release(id, ifname string) error {
	if err := s.disk.Lock(); err != nil {
		return err
	}
	defer s.disk.Unlock()
	return s.disk.ReleaseByID(id, ifname)
}

// list returns every allocation. An address file with no owner (a plugin
// killed between creating and writing it) has an empty ContainerID. The
// caller holds the lock.
func (s *store) list() ([]allocation, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("address store %s: %w", s.dir, err)
	}
	var out []allocation
	for _, e := range ents {
		a, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // the lock file, last_reserved_ip.*
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			continue
		}
		al := allocation{Addr: a}
		id, ifname, _ := strings.Cut(string(b), disk.LineBreak)
		al.ContainerID, al.IfName = strings.TrimSpace(id), strings.TrimSpace(ifname)
		out = append(out, al)
	}
	return out, nil
}

// remove deletes one address file. The caller holds the lock.
func (s *store) remove(a netip.Addr) error {
	err := os.Remove(filepath.Join(s.dir, a.String()))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// isAddrName reports whether a store file name is an address.
func isAddrName(name string) bool {
	_, err := netip.ParseAddr(name)
	return err == nil
}
