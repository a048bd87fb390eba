package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The pod annotations the sidecar reads (through the downward API file).
const (
	// AnnotationExpose lists the ports forwarded from the mesh to the app:
	// "8080,9090/tcp,53/udp".
	AnnotationExpose = "weft.dev/expose"
	// AnnotationForward lists static forwards: "5432=db.weft:5432,
	// 127.0.0.1:6380=100.64.3.7:6379".
	AnnotationForward = "weft.dev/forward"
)

// maxSpecItems bounds the entries of one expose or forward list.
const maxSpecItems = 256

// Ports are the ports a sidecar exposes to the mesh.
type Ports struct {
	TCP []uint16
	UDP []uint16
}

// ParseExpose parses a comma-separated port list: "8080", "8080/tcp",
// "53/udp". Duplicates are dropped; the lists come back sorted.
func ParseExpose(s string) (Ports, error) {
	var p Ports
	items := splitList(s)
	if len(items) > maxSpecItems {
		return Ports{}, fmt.Errorf("expose %q: %d ports, at most %d", clip(s), len(items), maxSpecItems)
	}
	for _, item := range items {
		num, proto, _ := strings.Cut(item, "/")
		port, err := parsePort(num)
		if err != nil {
			return Ports{}, fmt.Errorf("expose %q: %w", item, err)
		}
		switch strings.ToLower(proto) {
		case "", "tcp":
			p.TCP = append(p.TCP, port)
		case "udp":
			p.UDP = append(p.UDP, port)
		default:
			return Ports{}, fmt.Errorf("expose %q: protocol %q, want tcp or udp", item, proto)
		}
	}
	slices.Sort(p.TCP)
	slices.Sort(p.UDP)
	p.TCP, p.UDP = slices.Compact(p.TCP), slices.Compact(p.UDP)
	return p, nil
}

// Forward is a static forward: connections to Local (on the pod's
// loopback) go to Target on the mesh.
type Forward struct {
	Network string // "tcp" or "udp"
	Local   netip.AddrPort
	// Target is host:port; the host is an overlay IP or a member name.
	Target string
}

// ParseForwards parses a comma-separated list of LOCAL=TARGET[/udp]:
// LOCAL is a port (on 127.0.0.1) or ip:port, TARGET is host:port with the
// host an overlay address or a member name ("db.weft").
func ParseForwards(s string) ([]Forward, error) {
	items := splitList(s)
	if len(items) > maxSpecItems {
		return nil, fmt.Errorf("forward %q: %d entries, at most %d", clip(s), len(items), maxSpecItems)
	}
	var out []Forward
	seen := map[string]bool{}
	for _, item := range items {
		local, target, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("forward %q: want LOCAL=TARGET, e.g. 5432=db.weft:5432", item)
		}
		f := Forward{Network: "tcp"}
		if t, proto, ok := strings.Cut(target, "/"); ok {
			switch strings.ToLower(proto) {
			case "tcp":
			case "udp":
				f.Network = "udp"
			default:
				return nil, fmt.Errorf("forward %q: protocol %q, want tcp or udp", item, proto)
			}
			target = t
		}
		if port, err := parsePort(local); err == nil {
			f.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
		} else if ap, err := netip.ParseAddrPort(local); err == nil && ap.Port() != 0 {
			f.Local = ap
		} else {
			return nil, fmt.Errorf("forward %q: local side %q, want a port or ip:port", item, local)
		}
		host, port, err := net.SplitHostPort(target)
		if err != nil || host == "" || !validHost(host) {
			return nil, fmt.Errorf("forward %q: target %q, want host:port", item, target)
		}
		if _, err := parsePort(port); err != nil {
			return nil, fmt.Errorf("forward %q: target %w", item, err)
		}
		f.Target = target
		key := f.Network + " " + f.Local.String()
		if seen[key] {
			return nil, fmt.Errorf("forward %q: %s %s is forwarded twice", item, f.Network, f.Local)
		}
		seen[key] = true
		out = append(out, f)
	}
	return out, nil
}

// ParseAnnotations reads the downward API's annotations file: one
// key="value" per line, the value a Go-quoted string.
func ParseAnnotations(b []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		key, quoted, ok := strings.Cut(text, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("annotations line %d: want key=\"value\"", line)
		}
		value, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("annotations line %d (%s): value is not a quoted string", line, clip(key))
		}
		out[key] = value
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("annotations: %w", err)
	}
	return out, nil
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q, want 1-65535", clip(s))
	}
	return uint16(n), nil
}

// validHost accepts an IP address or a DNS-style name.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return false
		}
	}
	return true
}

// clip shortens what an error quotes of bad input.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
