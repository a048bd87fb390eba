// Package e2e runs weft on a real Kubernetes cluster built on this one
// machine: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
// in one lab namespace, and per node containerd, runc and kubelet, each node
// in a network namespace of its own on the lab underlay (internal/netlab)
// and in mount, UTS and PID namespaces of its own, so that hostPath volumes
// and processes of one node never see another's. weft is installed by
// `kubectl apply -k` exactly as a user would; the tests drive the cluster
// with kubectl and client-go. Everything the cluster made goes when it is
// torn down.
//
// It is test harness, not linked into the weft binary (cmd/weft's
// deps_test.go checks).
package e2e
