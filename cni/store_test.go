package cni

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// The store hands out every host address of a block except the node's,
// never the network or broadcast address, and fails cleanly when full.
func TestStoreExhaustsBlockSkippingReserved(t *testing.T) {
	st, err := openStore(filepath.Join(t.TempDir(), "weft"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	block := netip.MustParsePrefix("100.64.3.0/29")
	node := block.Addr().Next()
	var got []string
	for i := range 5 {
		a, err := st.allocate(block, node, fmt.Sprintf("c%d", i), "eth0")
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		got = append(got, a.String())
	}
	slices.Sort(got)
	want := []string{"100.64.3.2", "100.64.3.3", "100.64.3.4", "100.64.3.5", "100.64.3.6"}
	if !slices.Equal(got, want) {
		t.Errorf("allocated %v, want %v", got, want)
	}
	if a, err := st.allocate(block, node, "c5", "eth0"); err == nil {
		t.Errorf("a full /29 handed out %s", a)
	}
	if _, err := st.allocate(block, node, "c0", "eth0"); err == nil {
		t.Errorf("a second ADD for the same attachment got an address")
	}
	if err := st.release("c2", "eth0"); err != nil {
		t.Fatal(err)
	}
	if a, err := st.allocate(block, node, "c6", "eth0"); err != nil || a.String() != "100.64.3.4" {
		t.Errorf("after a release: %s %v, want the freed 100.64.3.4", a, err)
	}
}

// After a re-lease (the node lost its block in a conflict), allocations
// come from the new block only; the old block's addresses stay with their
// pods until DEL and are not handed out again, even once freed.
func TestStoreNewBlockNeverReusesOld(t *testing.T) {
	st, err := openStore(filepath.Join(t.TempDir(), "weft"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	oldBlock := netip.MustParsePrefix("100.64.3.0/24")
	newBlock := netip.MustParsePrefix("100.64.9.0/24")
	old, err := st.allocate(oldBlock, oldBlock.Addr().Next(), "old", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		a, err := st.allocate(newBlock, newBlock.Addr().Next(), fmt.Sprintf("new%d", i), "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !newBlock.Contains(a) || a == newBlock.Addr().Next() || a == old {
			t.Fatalf("allocation from %s gave %s", newBlock, a)
		}
		if i == 10 {
			if got, _ := st.lookup("old", "eth0"); !slices.Equal(got, []netip.Addr{old}) {
				t.Fatalf("the old block's pod holds %v, want %s until its DEL", got, old)
			}
			st.release("old", "eth0")
		}
	}
}

// Parallel allocations from many goroutines (each its own store handle, as
// separate plugin processes have) never share an address.
func TestStoreParallelDistinct(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "weft")
	block := netip.MustParsePrefix("100.64.5.0/26")
	const n = 40
	addrs := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := openStore(dir)
			if err != nil {
				errs[i] = err
				return
			}
			defer st.Close()
			addrs[i], errs[i] = st.allocate(block, block.Addr().Next(), fmt.Sprintf("c%d", i), "eth0")
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, a := range addrs {
		if errs[i] != nil {
			t.Fatalf("allocation %d: %v", i, errs[i])
		}
		if j, dup := seen[a]; dup {
			t.Errorf("c%d and c%d both got %s", j, i, a)
		}
		seen[a] = i
	}
}
