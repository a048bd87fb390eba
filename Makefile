# weft — see README.md. Every target that needs system packages depends on
# `deps`, which installs only what is missing.

GO        ?= go
BIN       := bin
WEFT      := $(BIN)/weft
# Stock wireguard-go at the same version weft links, for the bench baseline.
WGGO_VER  := $(shell $(GO) list -m -f '{{.Version}}' golang.zx2c4.com/wireguard 2>/dev/null)
STOCK     := $(BIN)/wireguard
# Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kubectl) and containerd for the cluster tests
# (internal/harness/k8stest, internal/harness/e2e), built from the Go module
# proxy by tools/k8s (a module of its own).
K8S_BIN   := $(BIN)/k8s
APISERVER := $(BIN)/kube-apiserver
FUZZTIME  ?= 10s

# command -> Debian package; deps installs the packages of missing commands.
DEB_CMDS := iperf3:iperf3 wg:wireguard-tools tcpdump:tcpdump ip:iproute2 ping:iputils-ping \
            unshare:util-linux /usr/lib/cni/portmap:containernetworking-plugins \
            iptables:iptables etcd:etcd-server runc:runc nsenter:util-linux

.PHONY: all build apiserver k8s e2e e2e-up test test-k8s test-short demo bench bench-agent bench-sidecar bench-cni lint deps fuzz clean

all: build

# Static, as the image ships it (the tests build the same:
# internal/harness/gobuild).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(WEFT) ./cmd/weft

deps:
	@missing=""; \
	for pair in $(DEB_CMDS); do \
		cmd=$${pair%%:*}; pkg=$${pair#*:}; \
		if ! command -v $$cmd >/dev/null 2>&1 && [ ! -x $$cmd ]; then missing="$$missing $$pkg"; fi; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "deps: run as root (apt-get install$$missing)"; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all present"; fi
	@command -v $(GO) >/dev/null || { echo "deps: Go is missing (https://go.dev/dl)"; exit 1; }
	$(GO) mod download

lint:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The full suite: real namespaces, veths, TUN devices and traffic (as root),
# the real kube-apiserver tests and the real-node cluster
# (internal/harness/e2e).
# Packages run one at a time (-p 1): the lab, simulation and cluster tests
# each want the whole machine, and a starved gossip failure detector flags
# live nodes.
test: deps lint k8s apiserver
	$(GO) test -p 1 -count=1 -timeout 45m ./...
	$(GO) test -p 1 -count=1 -race -short -timeout 20m ./...

# Kubernetes v1.37.2 (client-go's release) and containerd v2.4.2 for the
# cluster tests, in one build. The first build takes 10-15 minutes on 2
# cores; the binaries are kept per machine (~/.cache/weft, keyed by
# tools/k8s's go.mod, go.sum and build.sh), so later runs, fresh clones
# included, copy them in seconds.
k8s: $(K8S_BIN)/.built

$(K8S_BIN)/.built: tools/k8s/go.mod tools/k8s/go.sum tools/k8s/build.sh
	tools/k8s/build.sh $(K8S_BIN)
	touch $@

# kube-apiserver alone, for internal/harness/k8stest.
apiserver: $(APISERVER)

$(APISERVER): $(K8S_BIN)/.built
	cp $(K8S_BIN)/kube-apiserver $(APISERVER).tmp
	mv $(APISERVER).tmp $(APISERVER)

# weft on a real cluster: control plane, kubelet + containerd
# nodes in namespaces, `kubectl apply -k`, the tests of internal/harness/e2e
# (also part of `make test`; WEFT_E2E=0 leaves them out).
e2e: deps k8s
	$(GO) test -count=1 -v -timeout 30m ./internal/harness/e2e

# The same lab cluster, kept up for poking at by hand until ^C (docs/testing.md).
e2e-up: deps k8s
	$(GO) run ./internal/harness/e2e/cmd/e2e-cluster

# Only the Kubernetes tests: deploy/ against a real kube-apiserver
# and etcd, RBAC, the injection webhook, join discovery, the agent's load.
test-k8s: deps apiserver
	$(GO) test -count=1 -v -timeout 15m ./internal/harness/k8stest ./agent/kubejoin

test-short:
	$(GO) test -short ./...

fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; \
			$(GO) test -run=NONE -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

demo: deps build
	$(WEFT) demo

$(STOCK):
	GOBIN=$(CURDIR)/$(BIN) $(GO) install golang.zx2c4.com/wireguard@$(WGGO_VER)

bench: deps build $(STOCK)
	$(WEFT) bench --stock $(STOCK) --node-to-node --streams 1,4 --duration 10s
	$(GO) test -run=NONE -bench=. -benchtime=3x ./tunnel ./netstack

# The agent's costs: convergence of 200 in-process Serf agents,
# and a 25-node lab of real agent processes (join-to-handshake time, idle RSS
# and CPU, PSS). About 12 minutes, half of it the 1000-agent convergence
# (slow motion, see docs/performance.md); -bench 'Convergence/members=200|Mesh25'
# leaves that out.
bench-agent: deps
	$(GO) test -run=NONE -bench='Convergence|Mesh25' -benchtime=1x -timeout 60m ./agent

# The sidecar: an app behind an unprivileged `weft sidecar`
# reaching a host-mode pod, against tun pod to pod in the same run.
bench-sidecar: deps build
	$(WEFT) bench --modes tun --sidecar --streams 1,4 --duration 10s

# The CNI plugin: ADD latency one at a time and with 50 in flight
# on one lab node, through libcni and the built binary, as a runtime calls it.
bench-cni: deps
	$(GO) test -run=NONE -bench='^BenchmarkAdd$$' -benchtime=200x ./cni
	$(GO) test -run=NONE -bench='^BenchmarkParallelAdd$$' -benchtime=10x ./cni

clean:
	rm -rf $(BIN)
	-$(WEFT) demo --down 2>/dev/null
