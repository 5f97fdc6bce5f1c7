#!/usr/bin/env bash
# Validates every shipped example configuration, routes files and sidecar
# files alike (validate tells them apart), so that an example that no
# longer loads fails CI. -skip-files: the examples name certificates that
# their scripts generate at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/causeway
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/causeway
mapfile -t files < <(find examples -maxdepth 2 -name '*.yaml' -not -path 'examples/kubernetes/*' -not -path 'examples/grafana/*' | sort)
[ ${#files[@]} -gt 0 ] || { echo "check-examples: no example found" >&2; exit 1; }
for f in "${files[@]}"; do
  "$bin" validate -skip-files "$f"
done
