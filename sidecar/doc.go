// Package sidecar is the embeddable weft node for clusters where no host CNI
// may run: a Serf member with a /32 lease and a netstack device, with Dial
// and Listen on the mesh, and the injector that adds it to pods.
package sidecar
