package memtrim

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const sampleSmaps = `00400000-00e10000 r-xp 00000000 fe:00 1234   /usr/bin/weft
Size:              10304 kB
Rss:                7780 kB
Anonymous:             0 kB
00e10000-018b9000 r--p 00a10000 fe:00 1234   /usr/bin/weft
Rss:                9304 kB
Anonymous:             8 kB
018b9000-0192a000 rw-p 014b9000 fe:00 1234   /usr/bin/weft
Rss:                 324 kB
Anonymous:           200 kB
7fd931d38000-7fd931e8e000 r-xp 00028000 fe:00 99   /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 920 kB
7fff0000-7fff1000 r--p 00000000 00:00 0   /usr/bin/weft (deleted)
Rss:                   4 kB
7fff2000-7fff3000 rw-p 00000000 00:00 0
Rss:                   4 kB
`

func TestParseSmaps(t *testing.T) {
	ms, err := parseSmaps([]byte(sampleSmaps), "/usr/bin/weft")
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{Start: 0x400000, End: 0xe10000, Perms: "r-xp", RSS: 7780 << 10},
		{Start: 0xe10000, End: 0x18b9000, Perms: "r--p", RSS: 9304 << 10, Anonymous: 8 << 10},
	}
	if len(ms) != len(want) {
		t.Fatalf("got %+v, want %+v", ms, want)
	}
	for i := range want {
		if ms[i] != want[i] {
			t.Errorf("mapping %d: got %+v, want %+v", i, ms[i], want[i])
		}
	}
	for _, bad := range []string{
		"zz-00e10000 r-xp 00000000 fe:00 1 /usr/bin/weft\n",
		"00e10000-00400000 r-xp 00000000 fe:00 1 /usr/bin/weft\n",
		"00400000-00e10000 r-xp 00000000 fe:00 1 /usr/bin/weft\nRss: lots kB\n",
	} {
		if _, err := parseSmaps([]byte(bad), "/usr/bin/weft"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// mapFile maps a new file of n pages, filled with b, as prot (MAP_PRIVATE).
func mapFile(t *testing.T, n int, b byte, prot int) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, bytes.Repeat([]byte{b}, n*os.Getpagesize()), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, n*os.Getpagesize(), prot, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return path, mem
}

func residentOf(t *testing.T, path string) []Mapping {
	t.Helper()
	ms, err := fileMappings(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 {
		t.Fatalf("%d read-only mappings of %s: %+v", len(ms), path, ms)
	}
	return ms
}

// A clean read-only file mapping is dropped from the resident set, reads
// the same afterwards, and is resident again once read.
func TestTrimDropsCleanPages(t *testing.T) {
	const pages = 2048 // 8 MiB: more than one fault-around or large folio
	path, mem := mapFile(t, pages, 'x', unix.PROT_READ)
	var sum int
	for i := 0; i < len(mem); i += os.Getpagesize() {
		sum += int(mem[i])
	}
	if got := residentOf(t, path)[0].RSS; got != uint64(len(mem)) {
		t.Fatalf("after reading every page %d bytes are resident, want %d", got, len(mem))
	}
	r, err := trimFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Trimmed) != 1 || r.Bytes() != uint64(len(mem)) || len(r.Skipped) != 0 {
		t.Fatalf("trim: %+v", r)
	}
	if got := residentOf(t, path)[0].RSS; got != 0 {
		t.Fatalf("after the trim %d bytes are resident, want 0", got)
	}
	if mem[5*os.Getpagesize()] != 'x' || sum != 'x'*pages {
		t.Fatal("the mapping reads differently after the trim")
	}
	if got := residentOf(t, path)[0].RSS; got == 0 || got > uint64(len(mem))/2 {
		// One read maps its page and what fault-around maps with it: 64
		// KiB, or the page cache's whole large folio (2 MiB here).
		t.Errorf("after reading one page %d bytes of %d are resident", got, len(mem))
	}
}

// A read-only mapping holding pages this process wrote (relocations) keeps
// them: dropping them would bring back the file's contents.
func TestTrimSkipsWrittenPages(t *testing.T) {
	path, mem := mapFile(t, 4, 'x', unix.PROT_READ|unix.PROT_WRITE)
	mem[0] = 'w' // copy on write: an anonymous page in a file mapping
	if err := unix.Mprotect(mem, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	r, err := trimFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Skipped) != 1 || len(r.Trimmed) != 0 {
		t.Fatalf("trim: %+v", r)
	}
	if mem[0] != 'w' {
		t.Fatalf("the written page reads %q after the trim", mem[0])
	}
}

// The running test binary trims itself and goes on running.
func TestTrimExecutable(t *testing.T) {
	before, err := ExecutableMappings()
	if err != nil {
		t.Fatal(err)
	}
	if len(before) == 0 {
		t.Fatal("no read-only mappings of the executable")
	}
	r, err := Trim()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Trimmed)+len(r.Skipped) != len(before) || len(r.Trimmed) == 0 {
		t.Fatalf("trim: %+v of %+v", r, before)
	}
	if s := strings.Repeat("ok", 2); s != "okok" {
		t.Fatal(s)
	}
}
