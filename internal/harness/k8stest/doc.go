// Package k8stest runs a real Kubernetes control plane for tests: Debian's
// etcd (package etcd-server) and a kube-apiserver built from the Go module
// proxy (`make apiserver`, tools/k8s), each on random loopback ports,
// with token authentication, Node+RBAC authorization and an audit log of
// every request made by a service account. Nothing else runs: no
// controller-manager, no scheduler, no kubelet, so objects are stored and
// admitted (webhooks included) but nothing acts on them.
//
// The package's own tests check weft's Kubernetes side against it: every
// manifest of deploy/ applies, RBAC grants exactly what the agent and the
// injector need, the injection webhook works through a real
// MutatingWebhookConfiguration, the agent finds its join addresses from
// Nodes, and a running agent makes exactly one request.
//
// It is test harness, not linked into the weft binary (cmd/weft's
// deps_test.go checks).
package k8stest
