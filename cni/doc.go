// Package cni is weft's CNI plugin (spec 1.1: ADD, DEL, CHECK, GC, STATUS,
// VERSION): pod addresses from the node's leased block, veth wiring, and the
// atomic install and uninstall of its conflist.
package cni
