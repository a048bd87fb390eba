// Package bench measures weft's data path: on the namespace lab, TCP
// throughput (iperf3, or the built-in Go sender) at 1 and N streams and
// ping RTT, pod to pod across nodes through `weft agent` processes and the
// CNI plugin (kernel, tun), node to node for netstack, with the raw underlay
// and optionally stock wireguard-go in the same run, so every figure has its
// baseline beside it; and between two real pods with `weft bench server`
// and `weft bench client`.
package bench
