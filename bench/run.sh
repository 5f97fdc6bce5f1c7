#!/usr/bin/env bash
# Runs the shared side-by-side harness (../shared/bench beside the repository,
# or $BENCH_HARNESS) with Causeway added as a target. Without the harness's
# tools (wrk, nginx, haproxy, caddy) it runs the harness's setup.sh first
# (root needed). Any harness setting passes through (ONLY, ROUNDS, DURATION,
# MODES, ...), e.g.  ONLY=direct,nginx,haproxy,causeway,causeway-nethttp ROUNDS=3 bench/run.sh
# ("causeway" serves HTTP/1.1 with its own engine, the default; "causeway-nethttp" with
# the deprecated net/http one).
# Traefik is built into $TRAEFIK_BIN when missing (TRAEFIK_VERSION, default
# v3.7.13; SKIP_TRAEFIK_BUILD=1 to not try). BENCH_NETNS=1 runs the harness
# in a network namespace of its own, for when another server on the machine
# holds one of its fixed ports.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
harness=${BENCH_HARNESS:-$root/../shared/bench}
[ -x "$harness/run.sh" ] || { echo "bench: no harness at $harness (set BENCH_HARNESS)" >&2; exit 1; }

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null; then
  echo "bench: installing the harness's peers with $harness/setup.sh"
  (cd "$harness" && ./setup.sh)
fi

# Traefik: the harness's setup.sh does not build it, and the harness skips
# it without a binary at $TRAEFIK_BIN. Build it here from the Go module
# proxy the first time (about 5 minutes cold on 2 cores); a failed build is
# reported and Traefik skipped, the rest of the benchmark still runs.
export TRAEFIK_BIN=${TRAEFIK_BIN:-/tmp/bin/traefik}
TRAEFIK_VERSION=${TRAEFIK_VERSION:-v3.7.13}

TRAEFIK_BUILD_LOG=/tmp/bench-traefik-build.log
build_traefik() { # -> $TRAEFIK_BIN; returns 1 on any failure (set -e does not reach in here)
  local work rc
  echo "bench: building Traefik $TRAEFIK_VERSION into $TRAEFIK_BIN (log: $TRAEFIK_BUILD_LOG)"
  : >"$TRAEFIK_BUILD_LOG"
  work=$(mktemp -d /tmp/bench-traefik-src.XXXXXX) || return 1
  build_traefik_in "$work" >>"$TRAEFIK_BUILD_LOG" 2>&1
  rc=$?
  rm -rf "$work"
  return $rc
}
build_traefik_in() { # dir: copy the module source there, patch it, build
  local json src work=$1
  # Outside any module, so the download is not recorded in ours. With
  # -json the reason for a failure is in the output, not on stderr.
  json=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION") || { echo "$json"; return 1; }
  src=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$src" ] && [ -d "$src" ] || { echo "go mod download gave no source directory"; return 1; }
  cp -r "$src/." "$work/" && chmod -R u+w "$work" || return 1
  # The module zip leaves out what the repository builds separately or
  # keeps in its own module; the benchmark needs none of it:
  # - webui/static (the dashboard, built with node): an empty placeholder
  #   lets the //go:embed compile.
  # - pkg/config/dynamic/ext, a nested module the go.mod replaces by path:
  #   empty extension types, as in the open-source repository.
  if [ -z "$(ls -A "$work/webui/static" 2>/dev/null)" ]; then
    mkdir -p "$work/webui/static" && echo "dashboard not built" >"$work/webui/static/placeholder.txt" || return 1
  fi
  if [ ! -f "$work/pkg/config/dynamic/ext/go.mod" ]; then
    mkdir -p "$work/pkg/config/dynamic/ext" || return 1
    printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24.0\n' >"$work/pkg/config/dynamic/ext/go.mod"
    printf '%s\n' 'package ext' '' 'type HTTP struct{}' '' 'type Router struct{}' '' 'type RouterIng struct{}' '' \
      'func (r RouterIng) ToRouter() Router { return Router{} }' >"$work/pkg/config/dynamic/ext/ext.go"
  fi
  # Two dependencies the module proxy reachable here refuses, both off the
  # benchmark's path: the go-http-auth fork of the basic/digest-auth
  # middlewares (the upstream v0.4.0 it forks is used instead, without the
  # fork's CheckSecret and RequireAuthStale: basic auth refuses every
  # password, a stale digest nonce gets a plain challenge) and lego's DNS-01
  # providers (an ACME DNS challenge answers an error). The version string
  # says so.
  (cd "$work" && go mod edit -dropreplace github.com/abbot/go-http-auth -require github.com/abbot/go-http-auth@v0.4.0) || return 1
  sed -i 's#goauth\.CheckSecret,#func(string, string) bool { return false },#' "$work/pkg/middlewares/auth/basic_auth.go" || return 1
  sed -i 's#d\.auth\.RequireAuthStale(rw, req)#d.auth.RequireAuth(rw, req)#' "$work/pkg/middlewares/auth/digest_auth.go" || return 1
  sed -i -e '\#"github.com/go-acme/lego/v5/providers/dns"#d' \
    -e 's#dns\.NewDNSChallengeProviderByName(p\.DNSChallenge\.Provider)#nil, fmt.Errorf("DNS challenge provider %q: not compiled into this build", p.DNSChallenge.Provider)#' \
    "$work/pkg/provider/acme/provider.go" || return 1
  local pkg=github.com/traefik/traefik/v3/pkg/version
  mkdir -p "$(dirname "$TRAEFIK_BIN")" || return 1
  (cd "$work" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
    -ldflags "-s -w -X $pkg.Version=${TRAEFIK_VERSION#v} -X '$pkg.Codename=bench build: no ACME DNS providers, no basic auth' -X $pkg.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    -o "$TRAEFIK_BIN.tmp" ./cmd/traefik) || { rm -f "$TRAEFIK_BIN.tmp"; return 1; }
  mv "$TRAEFIK_BIN.tmp" "$TRAEFIK_BIN"
}
if [ ! -x "$TRAEFIK_BIN" ] && [ "${SKIP_TRAEFIK_BUILD:-}" != 1 ]; then
  if build_traefik; then
    echo "bench: built $("$TRAEFIK_BIN" version | tr -s ' \n' ' ')"
  else
    echo "bench: Traefik build failed; the harness will skip Traefik. Last lines of $TRAEFIK_BUILD_LOG:" >&2
    tail -n 15 "$TRAEFIK_BUILD_LOG" >&2 || true
  fi
fi

export CAUSEWAY_BIN=${CAUSEWAY_BIN:-/tmp/bench-causeway/causeway}
mkdir -p "$(dirname "$CAUSEWAY_BIN")"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$CAUSEWAY_BIN" ./cmd/causeway)

targets=$(mktemp)
trap 'rm -f "$targets"' EXIT
grep -v '^#' "$harness/targets.conf" | grep -v '^[[:space:]]*$' > "$targets"
echo 'causeway | http://127.0.0.1:8086/ | https://127.0.0.1:8446/ | $CAUSEWAY_BIN edge -config $RUN_DIR/causeway.yaml -log-level warn | $CAUSEWAY_BIN version' >> "$targets"
# The same edge with HTTP/1.1 on net/http (configs/causeway-nethttp.yaml).
echo 'causeway-nethttp | http://127.0.0.1:8087/ | https://127.0.0.1:8447/ | $CAUSEWAY_BIN edge -config $RUN_DIR/causeway-nethttp.yaml -log-level warn | $CAUSEWAY_BIN version' >> "$targets"

export TARGETS_FILE="$targets" EXTRA_CONFIGS_DIR="$here/configs"
export RESULTS_ROOT=${RESULTS_ROOT:-$root/bench/results}
if [ "${BENCH_NETNS:-}" = 1 ]; then
  # A network namespace of our own (root): a fresh loopback where the
  # harness's fixed ports (9000, 9443, 8081-8086, 8441-8446) are free even
  # when someone else's server holds them on the shared machine. Same
  # kernel, same CPUs; only the port space is separate. Everything above
  # that needs the module proxy has run by now.
  exec unshare --net bash -c 'ip link set lo up && exec "$0"' "$harness/run.sh"
fi
exec "$harness/run.sh"
