// Package proxy is the outbound side of a sidecar: the app of the pod
// reaches the overlay through a SOCKS5 proxy, an HTTP CONNECT proxy and
// static forwards listening on kernel sockets, each dialing out with a
// DialFunc (in the sidecar, the node's netstack dialer behind name
// resolution). It knows nothing of gVisor or the mesh.
package proxy
