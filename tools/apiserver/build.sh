#!/usr/bin/env bash
# build.sh OUT — build k8s.io/kubernetes/cmd/kube-apiserver (the release this
# module pins) into OUT for the Kubernetes tests (internal/k8stest).
#
# The first build takes about ten minutes on 2 cores, so the binary is kept
# per machine in $WEFT_TOOLS_CACHE (default ~/.cache/weft), keyed by a hash of
# this module's go.mod, go.sum and this script: a fresh clone on the same
# machine (CI) copies it instead of building it again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
ver=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$here/go.mod")
[ -n "$ver" ] || { echo "apiserver: no 'require k8s.io/kubernetes' line in $here/go.mod" >&2; exit 1; }
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache_dir=${WEFT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weft}
cached=$cache_dir/kube-apiserver-$ver-$key

if [ ! -x "$cached" ]; then
	mkdir -p "$cache_dir"
	major=${ver#v}; major=${major%%.*}
	minor=${ver#v*.}; minor=${minor%%.*}
	pkg=k8s.io/component-base/version
	# Without the version stamp the server reports v0.0.0-master and clients
	# fail to parse it.
	ldflags="-s -w -X $pkg.gitVersion=$ver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	echo "apiserver: building kube-apiserver $ver (first build on this machine: about 10 minutes on 2 cores)"
	start=$(date +%s)
	(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
		-o "$cached.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
	mv "$cached.tmp" "$cached"
	echo "apiserver: built in $(( $(date +%s) - start ))s, cached as $cached"
else
	echo "apiserver: using $cached"
fi
mkdir -p "$(dirname "$out")"
cp "$cached" "$out.tmp"
mv "$out.tmp" "$out"
