#!/usr/bin/env bash
# Brings the SPIRE example up on loopback, each part its own process: the
# spire-server and a spire-agent from the configurations in this folder (a
# join token for the node, the entries of entries.sh for the workloads),
# then the mesh of examples/mesh on SVIDs from that agent:
#   client -> edge -> sidecar(orders) -> orders -> sidecar(orders) -> sidecar(payments) -> payments
# Usage: examples/spire/run.sh [--check]   (--check: send requests, verify, stop)
# Needs spire-server and spire-agent on PATH or in .tools/bin (make deps).
# SPIRE_EXAMPLE_DIR (default /tmp/spire-example) and SPIRE_SERVER_PORT
# (default 8081) move the state and the server's port.
set -euo pipefail

# has TEXT WANT: TEXT contains WANT. A here-string, not "echo | grep -q": grep -q
# exits at its first match, and under pipefail the echo's SIGPIPE (141) would
# fail the check once the text outgrows the pipe's buffer.
has() { grep -qF -- "$2" <<<"$1" || { echo "run.sh --check: missing: $2" >&2; return 1; }; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PATH="$root/.tools/bin:$PATH"
base=${SPIRE_EXAMPLE_DIR:-/tmp/spire-example}
port=${SPIRE_SERVER_PORT:-8081}
for bin in spire-server spire-agent; do
  command -v "$bin" >/dev/null || { echo "run.sh: $bin not found: make deps builds it into .tools/bin" >&2; exit 1; }
done
[ -e "$base/server/data" ] && { echo "run.sh: $base holds a previous run's state; remove it first" >&2; exit 1; }
pids=()
cleanup() {
  # Workloads first, SPIRE last: the reverse of the start order.
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$base"
}
trap cleanup EXIT
mkdir -p "$base/server/data" "$base/agent/data" "$base/agent/api" "$base/bin"
# The configurations name /tmp/spire-example and port 8081: point them at
# this run's folder and port.
for f in server.conf agent.conf causeway.yaml sidecar-orders.yaml sidecar-payments.yaml; do
  sed -e "s#/tmp/spire-example#$base#g" -e "s#\"8081\"#\"$port\"#" "$here/$f" >"$base/$f"
done
(cd "$root" && go build -o "$base/bin/causeway" ./cmd/causeway && go build -o "$base/bin/service" ./examples/mesh/service)

spire-server run -config "$base/server.conf" >"$base/server.log" 2>&1 & pids+=($!)
sock="$base/server/api.sock"
for i in $(seq 1 120); do spire-server healthcheck -socketPath "$sock" >/dev/null 2>&1 && break; sleep 0.5; done
spire-server healthcheck -socketPath "$sock" >/dev/null || { echo "spire-server did not start:"; tail -20 "$base/server.log"; exit 1; }
spire-server bundle show -socketPath "$sock" >"$base/agent/bootstrap.pem"
token=$(spire-server token generate -socketPath "$sock" -ttl 600 | awk '/Token:/ {print $2}')
spire-agent run -config "$base/agent.conf" -joinToken "$token" >"$base/agent.log" 2>&1 & pids+=($!)
for i in $(seq 1 120); do spire-agent healthcheck -socketPath "$base/agent/api/api.sock" >/dev/null 2>&1 && break; sleep 0.5; done
spire-agent healthcheck -socketPath "$base/agent/api/api.sock" >/dev/null || { echo "spire-agent did not start:"; tail -20 "$base/agent.log"; exit 1; }
SPIRE_SERVER_SOCKET="$sock" "$here/entries.sh" "spiffe://example.org/spire/agent/join_token/$token" >/dev/null

cd "$base"
./bin/service -name payments -listen 127.0.0.1:27002 & pids+=($!)
./bin/service -name orders -listen 127.0.0.1:27001 -call payments -outbound 127.0.0.1:25001 & pids+=($!)
./bin/causeway sidecar -config sidecar-payments.yaml -log-level "${LOG_LEVEL:-warn}" & pids+=($!)
./bin/causeway sidecar -config sidecar-orders.yaml -log-level "${LOG_LEVEL:-warn}" & pids+=($!)
./bin/causeway edge -config causeway.yaml -log-level "${LOG_LEVEL:-warn}" & pids+=($!)

# Ready once every workload holds its SVID (the first takes a few seconds).
ready() {
  for u in http://127.0.0.1:28081/readyz http://127.0.0.1:25000/readyz http://127.0.0.1:25010/readyz \
           http://127.0.0.1:27001/ http://127.0.0.1:27002/; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$u")" = 200 ] || return 1
  done
}
for i in $(seq 1 600); do ready && break; sleep 0.1; done
ready || { echo "run.sh: not ready after 60s"; curl -s http://127.0.0.1:28081/readyz; exit 1; }

if [ "${1:-}" = "--check" ]; then
  out=$(curl -fsS http://127.0.0.1:28080/orders/42)
  echo "$out"
  has "$out" '"caller":"spiffe://example.org/ns/edge/sa/gateway"'
  has "$out" '"service":"payments"'
  has "$out" '"caller":"spiffe://example.org/ns/shop/sa/orders"'
  # Each workload presents its own SVID, issued by this SPIRE server.
  for m in 28081 25000 25010; do
    metrics=$(curl -fsS "http://127.0.0.1:$m/metrics")
    has "$metrics" "causeway_workload_api_connected{socket=\"unix://$base/agent/api/api.sock\"} 1"
  done
  metrics=$(curl -fsS http://127.0.0.1:28081/metrics)
  has "$metrics" 'causeway_certificate_expiry_timestamp_seconds{name="spiffe://example.org/ns/edge/sa/gateway"}'
  echo "spire example: ok"
  exit 0
fi

echo "SPIRE and the mesh are running (state in $base). Try:"
echo "  curl -s http://127.0.0.1:28080/orders/42"
echo "  spire-server entry show -socketPath $sock"
echo "  curl -s http://127.0.0.1:28081/metrics | grep -E 'workload_api|expiry'"
echo "Ctrl-C stops everything."
wait
