// Package memtrim drops the pages of the running executable that only
// starting touched from the process's resident set.
//
// A Go binary that links Serf, wireguard-go, gVisor and client-go maps
// about 21 MiB of code and read-only data. Starting touches a few pages
// spread over most of it (package init, type and itab tables, flag
// parsing, the first connections), and the kernel's fault-around maps up to
// 64 KiB around each touched page, so an idle agent kept ~16 MiB of its
// binary resident while its steady state needs well under that. Trim unmaps
// those clean file pages (MADV_DONTNEED: the page cache keeps them, and a
// later access faults them back in, with its fault-around), so what is
// resident afterwards is what the process uses since.
package memtrim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mapping is one read-only mapping of the executable.
type Mapping struct {
	Start, End uintptr
	Perms      string
	// RSS is its resident size in bytes; Anonymous the part of that
	// written by this process (relocations, copy on write).
	RSS, Anonymous uint64
}

// Result says what Trim did.
type Result struct {
	Trimmed []Mapping // the mappings trimmed, as they were before
	Skipped []Mapping // read-only mappings holding written pages
}

// Bytes is the resident size of the trimmed mappings before the trim.
func (r Result) Bytes() uint64 {
	var n uint64
	for _, m := range r.Trimmed {
		n += m.RSS
	}
	return n
}

// ExecutableMappings lists the read-only mappings (code and read-only
// data) of the running executable from /proc/self/smaps.
func ExecutableMappings() ([]Mapping, error) {
	exe, err := executable()
	if err != nil {
		return nil, err
	}
	return fileMappings(exe)
}

// executable is the path of the running executable, as smaps names it.
func executable() (string, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return "", fmt.Errorf("memtrim: %w", err)
	}
	return exe, nil
}

// fileMappings lists this process's read-only mappings of path.
func fileMappings(path string) ([]Mapping, error) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil, fmt.Errorf("memtrim: %w", err)
	}
	return parseSmaps(b, path)
}

// parseSmaps returns the mappings of path in an smaps text that are not
// writable.
func parseSmaps(b []byte, path string) ([]Mapping, error) {
	var out []Mapping
	var cur *Mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			// A mapping header: "start-end perms offset dev inode [path]".
			cur = nil
			if len(f) < 6 || strings.Join(f[5:], " ") != path || len(f[1]) != 4 || f[1][1] == 'w' || f[1][0] != 'r' {
				continue
			}
			lo, hi, ok := strings.Cut(f[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if !ok || err1 != nil || err2 != nil || end <= start {
				return nil, fmt.Errorf("memtrim: smaps: bad range in %q", line)
			}
			out = append(out, Mapping{Start: uintptr(start), End: uintptr(end), Perms: f[1]})
			cur = &out[len(out)-1]
			continue
		}
		if cur == nil || len(f) < 3 || f[2] != "kB" {
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("memtrim: smaps: bad size in %q", line)
		}
		switch f[0] {
		case "Rss:":
			cur.RSS = n << 10
		case "Anonymous:":
			cur.Anonymous = n << 10
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("memtrim: smaps: %w", err)
	}
	return out, nil
}

// Trim drops the executable's clean read-only pages from the resident set.
func Trim() (Result, error) {
	exe, err := executable()
	if err != nil {
		return Result{}, err
	}
	return trimFile(exe)
}

// trimFile trims this process's read-only mappings of path. A mapping with
// written pages (a dynamically linked binary's relocated read-only data) is
// left alone: dropping those would bring back the file's contents.
func trimFile(path string) (Result, error) {
	ms, err := fileMappings(path)
	if err != nil {
		return Result{}, err
	}
	var r Result
	for _, m := range ms {
		if m.Anonymous != 0 {
			r.Skipped = append(r.Skipped, m)
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.Start, m.End-m.Start, unix.MADV_DONTNEED); errno != 0 {
			return r, fmt.Errorf("memtrim: madvise %#x-%#x (%s) DONTNEED: %w", m.Start, m.End, m.Perms, errno)
		}
		r.Trimmed = append(r.Trimmed, m)
	}
	return r, nil
}
