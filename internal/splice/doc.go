// Package splice joins two connections both ways, carrying TCP half-closes
// and resets across, and tracks the goroutines and connections of one
// server so that a shutdown aborts them all: the data path shared by the
// netstack forwarder (overlay to the pod's loopback) and the sidecar's
// proxy (the pod's loopback to the overlay).
package splice
