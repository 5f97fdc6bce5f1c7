#!/usr/bin/env bash
# Brings SPIRE up on loopback from the configurations in this folder: the
# server, a join token, the agent, and the entries of entries.sh. Leaves
# both running (their PIDs in /tmp/spire-example/*.pid); `run.sh stop`
# stops them. Needs spire-server and spire-agent on PATH (make deps).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=/tmp/spire-example
if [ "${1:-}" = stop ]; then
  for p in agent server; do
    [ -f "$base/$p.pid" ] && kill "$(cat "$base/$p.pid")" 2>/dev/null || true
    rm -f "$base/$p.pid"
  done
  exit 0
fi
mkdir -p "$base/server/data" "$base/agent/data" "$base/agent/api"
spire-server run -config "$here/server.conf" >"$base/server.log" 2>&1 &
echo $! >"$base/server.pid"
until spire-server healthcheck -socketPath "$base/server/api.sock" >/dev/null 2>&1; do sleep 0.5; done
spire-server bundle show -socketPath "$base/server/api.sock" >"$base/agent/bootstrap.pem"
token=$(spire-server token generate -socketPath "$base/server/api.sock" -ttl 600 | awk '/Token:/ {print $2}')
spire-agent run -config "$here/agent.conf" -joinToken "$token" >"$base/agent.log" 2>&1 &
echo $! >"$base/agent.pid"
until spire-agent healthcheck -socketPath "$base/agent/api/api.sock" >/dev/null 2>&1; do sleep 0.5; done
SPIRE_SERVER_SOCKET="$base/server/api.sock" "$here/entries.sh" "spiffe://example.org/spire/agent/join_token/$token" >/dev/null
echo "SPIRE is up: export SPIFFE_ENDPOINT_SOCKET=unix://$base/agent/api/api.sock"
echo "then run the edge and sidecars with identity source: spire"
