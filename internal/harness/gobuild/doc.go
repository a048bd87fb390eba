// Package gobuild runs `go build` for tests: the weft binary (and other
// commands of the module) built as the image ships them, static, for the
// tests that start real weft processes in a lab or on a cluster.
//
// It is test harness: the weft binary does not link it (cmd/weft's
// deps_test.go checks).
package gobuild
