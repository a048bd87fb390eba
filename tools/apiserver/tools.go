//go:build tools

// Package apiserver only pins k8s.io/kubernetes/cmd/kube-apiserver in this
// module's go.mod; `make apiserver` builds that command into bin/.
package apiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
