#!/usr/bin/env bash
# Builds the real kube-apiserver and etcd the tests and the demo run, from the
# Go module proxy, once per version, into a cache outside the source tree.
# Prints the directory that holds both binaries.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
kube_version="v1.37.2"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$root/test/tools/go.mod")"
cache="${CLUSTERCONNECT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterconnect/tools}"
dir="$cache/kube-$kube_version-etcd-$etcd_version"
mkdir -p "$dir"

cd "$root/test/tools"
if [[ ! -x "$dir/etcd" ]]; then
	echo "building etcd $etcd_version (about 30 s, once) ..." >&2
	go build -trimpath -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3
	mv "$dir/etcd.tmp" "$dir/etcd"
fi
if [[ ! -x "$dir/kube-apiserver" ]]; then
	echo "building kube-apiserver $kube_version (about 4 min on 2 cores, once) ..." >&2
	minor="${kube_version#v1.}"; minor="${minor%%.*}"
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	ldflags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000"
	go build -trimpath -ldflags "$ldflags" -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
	mv "$dir/kube-apiserver.tmp" "$dir/kube-apiserver"
fi
echo "$dir"
