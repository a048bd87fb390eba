// Package labtest holds weft's failure tests: real `weft agent` processes
// in a netlab lab whose underlay the tests break on purpose — partitions
// that heal, nodes that leave, die or are cut off, kill -9 and key rotation
// under a live TCP stream, a slow and lossy underlay — and the checks that
// the mesh comes out of each with no duplicate lease, no stuck block and no
// broken connection. It has no code outside its tests; they need root and
// skip under -short.
//
// It is test harness, not linked into the weft binary.
package labtest
