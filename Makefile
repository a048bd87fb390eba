# weft — see README.md. Every target that needs system packages depends on
# `deps`, which installs only what is missing.

GO        ?= go
BIN       := bin
WEFT      := $(BIN)/weft
# Stock wireguard-go at the same version weft links, for the bench baseline.
WGGO_VER  := $(shell $(GO) list -m -f '{{.Version}}' golang.zx2c4.com/wireguard 2>/dev/null)
STOCK     := $(BIN)/wireguard
FUZZTIME  ?= 10s

# command -> Debian package; deps installs the packages of missing commands.
DEB_CMDS := iperf3:iperf3 wg:wireguard-tools tcpdump:tcpdump ip:iproute2 ping:iputils-ping \
            unshare:util-linux /usr/lib/cni/portmap:containernetworking-plugins

.PHONY: all build test test-short demo bench lint deps fuzz clean

all: build

build:
	$(GO) build -o $(WEFT) ./cmd/weft

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

# The full suite: real namespaces, veths, TUN devices and traffic (as root).
# Packages run one at a time (-p 1): the lab and simulation tests each want
# the whole machine, and a starved gossip failure detector flags live nodes.
test: deps lint
	$(GO) test -p 1 -count=1 -timeout 30m ./...
	$(GO) test -p 1 -count=1 -race -short -timeout 20m ./...

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
	$(WEFT) bench --stock $(STOCK) --streams 1,4 --duration 10s
	$(GO) test -run=NONE -bench=. -benchtime=3x ./tunnel ./netstack

clean:
	rm -rf $(BIN)
	-$(WEFT) demo --down 2>/dev/null
