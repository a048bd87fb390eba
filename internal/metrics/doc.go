// Package metrics keeps a process's metrics and writes them in the
// Prometheus text exposition format (version 0.0.4), which every Prometheus
// scraper reads.
//
// It replaces github.com/prometheus/client_golang in the weft binary: the
// client, its protobuf model and procfs are ~5 MiB of resident memory in an
// agent whose whole budget is 25 MiB (their package inits alone touch that
// much of the binary), for the dozen series weft exports. What weft needs is
// here: counters, gauges, one-label gauge vectors, histograms, series read
// at scrape time (WireGuard's counters), and the standard process_* and go_*
// series. A Registry is passed to whoever registers, never global.
package metrics
