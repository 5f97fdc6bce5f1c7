#!/usr/bin/env bash
# Fails when a module's go.mod or go.sum is out of date. The example plugin
# is a module of its own that replaces causeway with this tree, so a new
# dependency of the main module (go-spiffe, say) needs go.sum lines there
# too; without this check that shows up only at the end of `make test`.
# test/conformance is one too, so that the conformance suite's dependencies
# stay out of the edge's go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for d in . examples/plugins/routeinfo test/conformance; do
  if ! out=$(cd "$d" && go mod tidy -diff 2>&1); then
    echo "check-modules: $d/go.mod or go.sum is not tidy; run: (cd $d && go mod tidy)" >&2
    echo "$out" >&2
    status=1
  fi
done
exit $status
