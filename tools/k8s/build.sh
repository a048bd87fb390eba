#!/usr/bin/env bash
# build.sh DIR — build the Kubernetes commands this module pins
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl)
# in one `go build`, and containerd, containerd-shim-runc-v2 and ctr at
# $CONTAINERD_VER, into DIR.
#
# A cold build of all of it takes 10-15 minutes on 2 cores, so the binaries
# are kept per machine in $WEFT_TOOLS_CACHE (default ~/.cache/weft), keyed by
# a hash of this module's go.mod, go.sum and this script: a fresh clone on
# the same machine (CI) copies them instead of building them again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
CONTAINERD_VER=v2.4.2
k8s_cmds="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
ctr_cmds="containerd containerd-shim-runc-v2 ctr"
ver=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$here/go.mod")
[ -n "$ver" ] || { echo "k8s: no 'require k8s.io/kubernetes' line in $here/go.mod" >&2; exit 1; }
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache_dir=${WEFT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weft}
cached=$cache_dir/k8s-$ver-containerd-$CONTAINERD_VER-$key

if [ ! -d "$cached" ]; then
	mkdir -p "$cache_dir"
	rm -rf "$cached.tmp"
	mkdir -p "$cached.tmp"
	major=${ver#v}; major=${major%%.*}
	minor=${ver#v*.}; minor=${minor%%.*}
	pkg=k8s.io/component-base/version
	# Without the version stamp the servers report v0.0.0-master and clients
	# fail to parse it.
	ldflags="-s -w -X $pkg.gitVersion=$ver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	echo "k8s: building $k8s_cmds $ver (first build on this machine: 10-15 minutes on 2 cores)"
	start=$(date +%s)
	pkgs=""
	for c in $k8s_cmds; do pkgs="$pkgs k8s.io/kubernetes/cmd/$c"; done
	# shellcheck disable=SC2086
	(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$cached.tmp/" $pkgs)
	echo "k8s: Kubernetes built in $(( $(date +%s) - start ))s"
	start=$(date +%s)
	pkgs=""
	for c in $ctr_cmds; do pkgs="$pkgs github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD_VER"; done
	# Static, without the snapshotters that need cgo or kernel headers; the
	# lab uses overlayfs and native.
	# shellcheck disable=SC2086
	(cd "$cached.tmp" && GOBIN="$cached.tmp" GOFLAGS=-trimpath CGO_ENABLED=0 \
		go install -ldflags "-s -w" -tags "no_btrfs no_devmapper no_zfs" $pkgs)
	echo "k8s: containerd $CONTAINERD_VER built in $(( $(date +%s) - start ))s"
	mv "$cached.tmp" "$cached"
	echo "k8s: cached in $cached"
else
	echo "k8s: using $cached"
fi
mkdir -p "$out"
for c in $k8s_cmds $ctr_cmds; do
	cp "$cached/$c" "$out/$c.tmp"
	mv "$out/$c.tmp" "$out/$c"
done
