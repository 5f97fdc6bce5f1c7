#!/usr/bin/env bash
# Installs the real peers the tests use: redis-server (Debian) and the Go
# tools listed below into ./.tools/bin. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/.tools/bin"
mkdir -p "$tools"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
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

# Go-built peers: name | package@version
while IFS='|' read -r name pkg; do
  name=$(echo "$name" | xargs); pkg=$(echo "$pkg" | xargs)
  [ -z "$name" ] && continue
  if [ ! -x "$tools/$name" ]; then
    echo "deps: go install $pkg"
    GOBIN="$tools" go install "$pkg"
  fi
done < <(grep -v '^#' scripts/go-tools.txt 2>/dev/null || true)
