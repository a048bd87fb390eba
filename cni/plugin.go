package cni

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/agent/api"
)

// HostVethPrefix starts the name of every host-side veth weft creates.
const HostVethPrefix = "wft"

// aliasPrefix starts the IFLA_IFALIAS weft writes on its host veths:
// "weft <containerID> <ifname>". GC and uninstall only ever delete links
// carrying it, so a link weft did not make is never touched.
const aliasPrefix = "weft "

// agentTimeout bounds every call to the agent's local API.
const agentTimeout = 3 * time.Second

// Funcs are the plugin's verbs, for skel.PluginMainFuncs (which reads the
// environment and stdin, checks versions, and prints results and spec
// errors).
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus}
}

// HostVethName is the host end of the attachment's veth: the same for every
// call, so DEL finds it without state, and at most 15 characters.
func HostVethName(containerID, ifname string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifname))
	return HostVethPrefix + hex.EncodeToString(sum[:])[:12]
}

func vethAlias(containerID, ifname string) string {
	return aliasPrefix + containerID + " " + ifname
}

// parseAlias returns the attachment a weft host veth belongs to.
func parseAlias(alias string) (types.GCAttachment, bool) {
	f := strings.Fields(alias)
	if !strings.HasPrefix(alias, aliasPrefix) || len(f) != 3 {
		return types.GCAttachment{}, false
	}
	return types.GCAttachment{ContainerID: f[1], IfName: f[2]}, true
}

// readyLease asks the agent for the node's lease. Not reachable or not ready
// is ErrTryAgainLater for ADD: the runtime retries, and the agent is
// usually just starting.
func readyLease(conf *NetConf, code uint) (api.Lease, netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	l, err := api.NewClient(conf.AgentSocket).Lease(ctx)
	if err != nil {
		return l, netip.Prefix{}, types.NewError(code, "weft agent not reachable", err.Error())
	}
	if !l.Ready {
		return l, netip.Prefix{}, types.NewError(code, "weft agent not ready", l.Reason)
	}
	block, err := netip.ParsePrefix(l.Block)
	if err != nil {
		return l, netip.Prefix{}, types.NewError(code, "weft agent reports no usable block", fmt.Sprintf("%q: %v", l.Block, err))
	}
	return l, block, nil
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	lease, block, err := readyLease(conf, types.ErrTryAgainLater)
	if err != nil {
		return err
	}
	node, err := netip.ParseAddr(lease.NodeAddress)
	if err != nil || !block.Contains(node) {
		return types.NewError(types.ErrTryAgainLater, "weft agent reports no node address in its block", lease.NodeAddress)
	}
	mtu := lease.MTU
	if conf.MTU != 0 {
		mtu = conf.MTU
	}
	// Forwarding is per network namespace; the agent does not turn it on.
	if err := ip.EnableIP4Forward(); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}

	st, err := openStore(conf.DataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	addr, err := st.allocate(block, node, args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	hostName := HostVethName(args.ContainerID, args.IfName)
	// On any failure undo in the reverse order of DEL's: the link first,
	// the address last, so the address is never free while a link uses it.
	defer func() {
		if err != nil {
			if l, lerr := netlinksafe.LinkByName(hostName); lerr == nil {
				netlink.LinkDel(l)
			}
			st.release(args.ContainerID, args.IfName)
		}
	}()

	// The attachment had no address, so a host veth of its name is the
	// remains of an ADD killed halfway: clear it so this one can succeed.
	if err := deleteHostVeth(hostName); err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("open netns %q: %w", args.Netns, err)
	}
	defer netns.Close()

	hostIf, contIf, err := setupContainerVeth(netns, args.IfName, hostName, mtu, addr)
	if err != nil {
		return err
	}
	if err := setupHostVeth(hostName, vethAlias(args.ContainerID, args.IfName), addr); err != nil {
		return err
	}
	hostIf.Mtu, contIf.Mtu = mtu, mtu
	contIf.Sandbox = netns.Path()
	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{hostIf, contIf},
		IPs: []*current.IPConfig{{
			Interface: current.Int(1),
			Address:   net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Gateway:   GatewayAddr.AsSlice(),
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: GatewayAddr.AsSlice()}},
		DNS:    conf.DNS,
	}
	return types.PrintResult(result, conf.CNIVersion)
}

// setupContainerVeth creates the veth pair from inside the pod and gives
// the pod end its /32, a link route to the gateway, a permanent neighbour
// entry for it and the default route through it.
func setupContainerVeth(netns ns.NetNS, ifName, hostName string, mtu int, addr netip.Addr) (*current.Interface, *current.Interface, error) {
	hostIf, contIf := &current.Interface{}, &current.Interface{}
	err := netns.Do(func(hostNS ns.NetNS) error {
		hostVeth, contVeth, err := ip.SetupVethWithName(ifName, hostName, mtu, "", hostNS)
		if err != nil {
			return err
		}
		hostIf.Name, hostIf.Mac = hostVeth.Name, hostVeth.HardwareAddr.String()
		contIf.Name, contIf.Mac = contVeth.Name, contVeth.HardwareAddr.String()

		link, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("look up %q: %w", ifName, err)
		}
		pod := &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: pod}); err != nil {
			return fmt.Errorf("add %s to %s: %w", pod, ifName, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", ifName, err)
		}
		gw := GatewayAddr.AsSlice()
		if err := netlink.NeighAdd(&netlink.Neigh{
			LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: gw, HardwareAddr: hostVeth.HardwareAddr,
		}); err != nil {
			return fmt.Errorf("neighbour %s on %s: %w", GatewayAddr, ifName, err)
		}
		for _, r := range podRoutes(link.Attrs().Index, addr) {
			if err := netlink.RouteAdd(&r); err != nil {
				return fmt.Errorf("add route %v in pod: %w", r, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return hostIf, contIf, nil
}

// podRoutes are the routes inside the pod: the gateway on the link, and
// everything else through it.
func podRoutes(index int, addr netip.Addr) []netlink.Route {
	gw := GatewayAddr.AsSlice()
	return []netlink.Route{
		{LinkIndex: index, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK, Src: addr.AsSlice()},
		{LinkIndex: index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: gw, Src: addr.AsSlice()},
	}
}

// setupHostVeth marks the host end as weft's and routes the pod's /32 to it.
func setupHostVeth(name, alias string, addr netip.Addr) error {
	veth, err := netlinksafe.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up %q: %w", name, err)
	}
	if err := netlink.LinkSetAlias(veth, alias); err != nil {
		return fmt.Errorf("alias %s: %w", name, err)
	}
	if err := netlink.RouteAdd(hostRoute(veth.Attrs().Index, addr)); err != nil {
		return fmt.Errorf("route %s via %s: %w", addr, name, err)
	}
	return nil
}

func hostRoute(index int, addr netip.Addr) *netlink.Route {
	return &netlink.Route{LinkIndex: index, Dst: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}
}

// cmdDel removes the attachment. It succeeds on half-made or missing state:
// no netns, no link, no allocation. The link goes first, the address last.
// The pod's end is not looked up in its netns: deleting one end of a veth
// deletes both, and a link named CNI_IFNAME there that weft did not make
// (an ADD that failed because it existed) must survive.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := deleteHostVeth(HostVethName(args.ContainerID, args.IfName)); err != nil {
		return err
	}
	st, err := openStore(conf.DataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.release(args.ContainerID, args.IfName)
}

// deleteHostVeth deletes a weft host veth by name; missing is fine, and a
// link of that name weft did not make is left alone.
func deleteHostVeth(name string) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if !strings.HasPrefix(l.Attrs().Alias, aliasPrefix) {
		// A half-made ADD may have died before writing the alias: only a
		// veth with weft's name prefix and no alias at all counts as ours.
		if _, ok := l.(*netlink.Veth); !ok || l.Attrs().Alias != "" {
			return nil
		}
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// cmdCheck verifies the attachment against prevResult and the node: the
// address is still reserved for it, the pod has its link, /32 and routes,
// and the host has the veth and the route to the pod.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.RawPrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "weft: CHECK needs prevResult", "")
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return err
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return err
	}
	var addr netip.Addr
	for _, c := range prev.IPs {
		if a, ok := netip.AddrFromSlice(c.Address.IP); ok && a.Unmap().Is4() {
			addr = a.Unmap()
		}
	}
	if !addr.IsValid() {
		return fmt.Errorf("check: prevResult has no IPv4 address")
	}
	st, err := openStore(conf.DataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	owned, err := st.lookup(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	if len(owned) != 1 || owned[0] != addr {
		return fmt.Errorf("check: %s is not reserved for %s/%s (store has %v)", addr, args.ContainerID, args.IfName, owned)
	}
	hostName := HostVethName(args.ContainerID, args.IfName)
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("check: host veth %s: %w", hostName, err)
	}
	if host.Attrs().Alias != vethAlias(args.ContainerID, args.IfName) {
		return fmt.Errorf("check: host veth %s is not this attachment's (alias %q)", hostName, host.Attrs().Alias)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("check: host veth %s is down", hostName)
	}
	if err := hasRoute(host, *hostRoute(host.Attrs().Index, addr)); err != nil {
		return fmt.Errorf("check: host: %w", err)
	}
	return ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("check: pod link %s: %w", args.IfName, err)
		}
		if _, ok := l.(*netlink.Veth); !ok {
			return fmt.Errorf("check: pod link %s is a %s, not a veth", args.IfName, l.Type())
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("check: pod link %s is down", args.IfName)
		}
		// Not ip.ValidateExpectedInterfaceIPs: it wants a route to the
		// address's own prefix, which a /32 behind a link-local gateway
		// does not have.
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("check: addresses of %s: %w", args.IfName, err)
		}
		want := netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if !slices.ContainsFunc(addrs, want.Equal) {
			return fmt.Errorf("check: pod link %s lacks %s", args.IfName, want.IPNet)
		}
		for _, r := range podRoutes(l.Attrs().Index, addr) {
			if err := hasRoute(l, r); err != nil {
				return fmt.Errorf("check: pod: %w", err)
			}
		}
		return nil
	})
}

// hasRoute reports whether the link carries a route with want's
// destination and gateway.
func hasRoute(l netlink.Link, want netlink.Route) error {
	routes, err := netlinksafe.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("routes of %s: %w", l.Attrs().Name, err)
	}
	for _, r := range routes {
		dst := "0.0.0.0/0"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		if dst == want.Dst.String() && r.Gw.Equal(want.Gw) {
			return nil
		}
	}
	return fmt.Errorf("no route to %s via %v on %s", want.Dst, want.Gw, l.Attrs().Name)
}

// cmdGC releases what belongs to no valid attachment: allocations (also
// ownerless ones left by a plugin killed mid-reservation) and weft's host
// veths, and host veths with no allocation. It keeps going past errors and
// reports them all.
func cmdGC(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[types.GCAttachment]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a] = true
	}
	st, err := openStore(conf.DataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.disk.Lock(); err != nil {
		return err
	}
	defer st.disk.Unlock()

	var errs []error
	allocs, err := st.list()
	if err != nil {
		errs = append(errs, err)
	}
	allocated := map[types.GCAttachment]bool{}
	for _, a := range allocs {
		allocated[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("gc: list links: %w", err))
	}
	// Links first, then addresses, as in DEL. A veth whose attachment has
	// no address in the store goes too: its pod's address is free for
	// anyone, and keeping it would let two pods share one. An ADD still in
	// progress reserved its address before making its veth, and GC holds
	// the store lock, so such a veth's allocation is in allocs.
	for _, l := range links {
		att, ok := parseAlias(l.Attrs().Alias)
		if !ok || valid[att] && allocated[att] || !strings.HasPrefix(l.Attrs().Name, HostVethPrefix) {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
			errs = append(errs, fmt.Errorf("gc: delete %s: %w", l.Attrs().Name, err))
		}
	}
	for _, a := range allocs {
		if valid[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] {
			continue
		}
		// The owner's veth may survive under its own name if its alias
		// was never written; the name is derived, so try it.
		if a.ContainerID != "" {
			if err := deleteHostVeth(HostVethName(a.ContainerID, a.IfName)); err != nil {
				errs = append(errs, fmt.Errorf("gc: %w", err))
				continue
			}
		}
		if err := st.remove(a.Addr); err != nil {
			errs = append(errs, fmt.Errorf("gc: release %s: %w", a.Addr, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return types.NewError(types.ErrInternal, "weft: gc incomplete", err.Error())
	}
	return nil
}

// cmdStatus reports whether ADD can succeed now: the agent answers, has a
// lease it is not in conflict over, and no pod still holds an address of a
// block the node lost (a node is not ready until its pods are
// re-addressed).
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	_, block, err := readyLease(conf, types.ErrPluginNotAvailable)
	if err != nil {
		// A restarting agent (a rolling update) left a note: the node
		// keeps its block and pod network, so the node stays Ready while
		// the next agent starts (agent/handover.go). ADD still waits.
		h, ok := api.ReadHandover(conf.AgentSocket, time.Now())
		if !ok {
			return err
		}
		block = netip.MustParsePrefix(h.Block) // ReadHandover checked it
	}
	if _, err := os.Stat(conf.DataDir); errors.Is(err, os.ErrNotExist) {
		return nil // no pod yet
	}
	st, err := openStore(conf.DataDir)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "weft: address store unusable", err.Error())
	}
	defer st.Close()
	if err := st.disk.Lock(); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "weft: address store unusable", err.Error())
	}
	allocs, err := st.list()
	st.disk.Unlock()
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "weft: address store unusable", err.Error())
	}
	var stale []string
	for _, a := range allocs {
		if !block.Contains(a.Addr) {
			stale = append(stale, a.Addr.String()+" ("+a.ContainerID+")")
		}
	}
	if len(stale) > 0 {
		return types.NewError(types.ErrPluginNotAvailable,
			fmt.Sprintf("weft: %d pods hold addresses outside the node's block %s (lost in a lease conflict); recreate them", len(stale), block),
			strings.Join(stale, ", "))
	}
	return nil
}
