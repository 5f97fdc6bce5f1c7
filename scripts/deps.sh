#!/usr/bin/env bash
# Installs the real peers the tests use: redis-server, curl, openssl,
# chromium, htpasswd, argon2, zsh, fish and groff (Debian), promtool, and the Go tools listed in go-tools.txt into
# ./.tools/bin. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/.tools/bin"
mkdir -p "$tools"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)          # the quickstart test runs its printed curl commands
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)    # mesh interop tests
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)    # the mesh example's Python client check  # the admin dashboard test (headless)
command -v zsh >/dev/null 2>&1 || need_apt+=(zsh)            # the completion scripts are checked by their own shells
command -v fish >/dev/null 2>&1 || need_apt+=(fish)
command -v groff >/dev/null 2>&1 || need_apt+=(groff-base)   # the man page is formatted with -ww
command -v htpasswd >/dev/null 2>&1 || need_apt+=(apache2-utils)  # basic auth tests use the real htpasswd's hashes
command -v argon2 >/dev/null 2>&1 || need_apt+=(argon2)      # and the reference argon2id encoder's
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)  # the certificate renewal units are checked by systemd itself
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "deps: installing ${need_apt[*]} with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "deps: missing ${need_apt[*]}; run as root: apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi

# promtool (lints /metrics in gateway's tests): only the binary, taken from
# Debian's prometheus package without installing it (no service starts).
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$tools/promtool" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "deps: promtool from Debian's prometheus package"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null; })
    dpkg -x "$tmp"/prometheus_*.deb "$tmp/x"
    install -m 0755 "$tmp/x/usr/bin/promtool" "$tools/promtool"
    rm -rf "$tmp"
  else
    echo "deps: promtool missing; install Debian's prometheus package or put promtool on PATH" >&2
    exit 1
  fi
fi

# Go-built peers and tools (scripts/go-tools.txt).
scripts/go-tools.sh

# Strict JSON Schemas of the Kubernetes kinds, for kubeconform (make
# check-manifests). kubeconform would download them; here they are built
# from the OpenAPI document inside the k8s.io/kubernetes module, the version
# the tests' API server is built from.
k8s_version=v1.37.2
schemas="$PWD/.tools/k8s-schemas/$k8s_version"
if [ ! -f "$schemas/deployment-apps-v1.json" ]; then
  echo "deps: Kubernetes $k8s_version schemas for kubeconform"
  dir=$(go mod download -json "k8s.io/kubernetes@$k8s_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -f "$dir/api/openapi-spec/swagger.json" ] || { echo "deps: k8s.io/kubernetes@$k8s_version has no api/openapi-spec/swagger.json" >&2; exit 1; }
  go run ./scripts/kubeschema -spec "$dir/api/openapi-spec/swagger.json" -out "$schemas.tmp"
  rm -rf "$schemas" && mv "$schemas.tmp" "$schemas"
fi

# The same for the Gateway API's kinds (examples/kubernetes/gateway-api),
# from the CRDs of the sigs.k8s.io/gateway-api module in go.mod: the
# version users install and the tests' API server runs.
# `go list -m` names the module's directory only once it is in the module
# cache; on a fresh machine nothing has downloaded it yet.
gwapi_version=$(go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api)
gwapi_dir=$(go mod download -json "sigs.k8s.io/gateway-api@$gwapi_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$gwapi_dir/config/crd/standard" ] || { echo "deps: sigs.k8s.io/gateway-api@$gwapi_version has no config/crd/standard" >&2; exit 1; }
gwschemas="$PWD/.tools/k8s-schemas/gateway-api-$gwapi_version"
if [ ! -f "$gwschemas/httproute-gateway-v1.json" ]; then
  echo "deps: Gateway API $gwapi_version schemas for kubeconform"
  go run ./scripts/kubeschema -crds "$gwapi_dir/config/crd/standard" -out "$gwschemas.tmp"
  rm -rf "$gwschemas" && mv "$gwschemas.tmp" "$gwschemas"
fi

# etcd and kube-apiserver for the Kubernetes provider's tests.
scripts/build-k8s.sh

# spire-server and spire-agent for the mesh's SPIRE tests.
scripts/build-spire.sh
