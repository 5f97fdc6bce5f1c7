#!/usr/bin/env bash
# Builds spire-server and spire-agent, the SPIFFE identity source the mesh's
# SPIRE tests run for real, from the Go module proxy into .tools/bin. The
# versions come from the tools module in tools/spire (go get -tool), so the
# main module does not carry SPIRE's dependencies. cgo is on: the server's
# sqlite3 datastore needs it. A stamp file makes a second run instant. Cold,
# on 2 cores: 10-25 minutes; the Go build cache makes later builds fast.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/.tools/bin"
mkdir -p "$tools"
spire_version=$(sed -n 's/^[[:space:]]*github.com\/spiffe\/spire \(v[^ ]*\).*/\1/p' tools/spire/go.mod)
[ -n "$spire_version" ] || { echo "deps: tools/spire/go.mod names no github.com/spiffe/spire version" >&2; exit 1; }

if [ "$(cat "$tools/.spire-version" 2>/dev/null)" != "$spire_version" ] || [ ! -x "$tools/spire-server" ] || [ ! -x "$tools/spire-agent" ]; then
  echo "deps: building spire-server and spire-agent $spire_version (10-25 minutes cold)"
  out=$(mktemp -d "$tools/.spire-build.XXXXXX")
  trap 'rm -rf "$out"' EXIT
  # Built into a scratch folder and moved into place only when both built,
  # so an interrupted build never leaves a half-written binary behind.
  (cd tools/spire && GOWORK=off CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o "$out/" \
    github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent)
  mv -f "$out/spire-server" "$out/spire-agent" "$tools/"
  echo "$spire_version" >"$tools/.spire-version"
fi
