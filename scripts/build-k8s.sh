#!/usr/bin/env bash
# Builds the Kubernetes control plane the provider's tests run for real:
# etcd (from go.etcd.io/etcd/server/v3) and kube-apiserver (from the
# k8s.io/kubernetes module), both from the Go module proxy, into .tools/bin.
# A stamp file per version makes a second run instant. Cold, on 2 cores:
# about 2 minutes for etcd and 10-25 for kube-apiserver; the Go build cache
# makes later builds fast.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/.tools/bin"
mkdir -p "$tools"
etcd_version=v3.7.3
k8s_version=v1.37.2

if [ "$(cat "$tools/.etcd-version" 2>/dev/null)" != "$etcd_version" ] || [ ! -x "$tools/etcd" ]; then
  echo "deps: building etcd $etcd_version (about 2 minutes cold)"
  (cd tools/k8s/etcd && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tools/etcd" .)
  echo "$etcd_version" >"$tools/.etcd-version"
fi

if [ "$(cat "$tools/.kube-apiserver-version" 2>/dev/null)" != "$k8s_version" ] || [ ! -x "$tools/kube-apiserver" ]; then
  echo "deps: building kube-apiserver $k8s_version (10-25 minutes cold)"
  dir=$(go mod download -json "k8s.io/kubernetes@$k8s_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || { echo "deps: k8s.io/kubernetes@$k8s_version did not download" >&2; exit 1; }
  src=$(mktemp -d)
  trap 'chmod -R u+w "$src"; rm -rf "$src"' EXIT
  cp -r "$dir/." "$src/"
  chmod -R u+w "$src"
  # The module's go.mod points every k8s.io/* staging module at ./staging,
  # which the module zip does not carry: drop those replaces and pin the
  # staging modules to the matching published release instead.
  python3 - "$src/go.mod" "${k8s_version#v1.}" <<'PY'
import re, sys
path, minor = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r'\nreplace \((?:.|\n)*?\n\)\n', '\n', text)
text = re.sub(r'^(\s*k8s\.io/[\w.\-/]+) v0\.0\.0$', lambda m: m.group(1) + ' v0.' + minor, text, flags=re.M)
open(path, 'w').write(text)
PY
  (cd "$src" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tools/kube-apiserver" ./cmd/kube-apiserver)
  echo "$k8s_version" >"$tools/.kube-apiserver-version"
fi
