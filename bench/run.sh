#!/usr/bin/env bash
# Runs the shared side-by-side harness (../shared/bench beside the repository,
# or $BENCH_HARNESS) with Causeway added as a target. Without the harness's
# tools (wrk, nginx, haproxy, caddy) it runs the harness's setup.sh first
# (root needed). Any harness setting passes through (ONLY, ROUNDS, DURATION,
# MODES, ...), e.g.  ONLY=direct,nginx,haproxy,causeway ROUNDS=3 bench/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
harness=${BENCH_HARNESS:-$root/../shared/bench}
[ -x "$harness/run.sh" ] || { echo "bench: no harness at $harness (set BENCH_HARNESS)" >&2; exit 1; }

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null; then
  echo "bench: installing the harness's peers with $harness/setup.sh"
  (cd "$harness" && ./setup.sh)
fi

export CAUSEWAY_BIN=${CAUSEWAY_BIN:-/tmp/bench-causeway/causeway}
mkdir -p "$(dirname "$CAUSEWAY_BIN")"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$CAUSEWAY_BIN" ./cmd/causeway)

targets=$(mktemp)
trap 'rm -f "$targets"' EXIT
grep -v '^#' "$harness/targets.conf" | grep -v '^[[:space:]]*$' > "$targets"
echo 'causeway | http://127.0.0.1:8086/ | https://127.0.0.1:8446/ | $CAUSEWAY_BIN edge -config $RUN_DIR/causeway.yaml -log-level warn | $CAUSEWAY_BIN version' >> "$targets"

export TARGETS_FILE="$targets" EXTRA_CONFIGS_DIR="$here/configs"
export RESULTS_ROOT=${RESULTS_ROOT:-$root/bench/results}
exec "$harness/run.sh"
