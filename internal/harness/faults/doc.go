// Package faults breaks a netlab lab's underlay on purpose, for tests:
// latency and loss on a node's link (SetNetem, ClearNetem), partitions of
// the switch (Partition, Heal) and cut cables (Cut, Uncut). Everything
// happens inside the lab's own namespaces, with iptables, NFQUEUE and ip
// in the switch namespace.
//
// It is test harness: the weft binary does not link it (cmd/weft's
// deps_test.go checks), so `weft demo` and `weft bench` carry no fault
// injection.
package faults
