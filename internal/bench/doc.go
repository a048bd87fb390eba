// Package bench measures weft's data path on the namespace lab: TCP
// throughput with iperf3 (1 and N streams) and RTT, through weft's tunnel
// backends, over the raw underlay, and through stock wireguard-go in the same
// run, so every figure has its baseline beside it.
package bench
