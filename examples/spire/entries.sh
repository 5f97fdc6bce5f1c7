#!/usr/bin/env bash
# Registration entries for the edge and two sidecars on one VM. The node is
# the agent attested with a join token whose SPIFFE ID is given as $1; each
# workload is selected by the Unix user it runs as (create the users
# causeway-edge, causeway-orders and causeway-payments, or use unix:path
# selectors for distinct binaries). Without those users every entry
# selects the current user: each process then receives all three SVIDs and
# picks its own by spiffe_id (causeway.yaml, sidecar-*.yaml).
set -euo pipefail
node=${1:?usage: entries.sh AGENT_SPIFFE_ID}
sock=${SPIRE_SERVER_SOCKET:-/tmp/spire-example/server/api.sock}
entry() {
  spire-server entry create -socketPath "$sock" -parentID "$node" -spiffeID "$1" -selector "$2" -x509SVIDTTL 3600
}
entry spiffe://example.org/ns/edge/sa/gateway   "unix:uid:$(id -u causeway-edge 2>/dev/null || id -u)"
entry spiffe://example.org/ns/shop/sa/orders    "unix:uid:$(id -u causeway-orders 2>/dev/null || id -u)"
entry spiffe://example.org/ns/shop/sa/payments  "unix:uid:$(id -u causeway-payments 2>/dev/null || id -u)"
