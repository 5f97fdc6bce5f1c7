#!/usr/bin/env bash
# Builds the Go tools listed in scripts/go-tools.txt (name | package@version)
# into ./.tools/bin, or only the ones named as arguments (`make lint` asks
# for golangci-lint alone). A stamp file .<name>-version holds the
# package@version a binary was built from, so a second run is instant and a
# version bump in go-tools.txt rebuilds. A binary without a stamp (built
# before stamps existed) is checked against its embedded build info instead
# of being rebuilt blindly.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/.tools/bin"
mkdir -p "$tools"
found=0
while IFS='|' read -r name pkg; do
  name=$(echo "$name" | xargs); pkg=$(echo "$pkg" | xargs)
  [ -z "$name" ] && continue
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then
    continue
  fi
  found=$((found + 1))
  stamp="$tools/.$name-version"
  if [ -x "$tools/$name" ] && [ ! -f "$stamp" ] &&
    go version -m "$tools/$name" 2>/dev/null | awk -v v="${pkg##*@}" '$1 == "mod" && $3 == v { ok = 1 } END { exit !ok }'; then
    echo "$pkg" >"$stamp"
  fi
  if [ ! -x "$tools/$name" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$pkg" ]; then
    echo "deps: go install $pkg"
    GOBIN="$tools" go install "$pkg"
    echo "$pkg" >"$stamp"
  fi
done < <(grep -v '^#' scripts/go-tools.txt)
if [ $# -gt 0 ] && [ "$found" -ne $# ]; then
  echo "go-tools: not all of '$*' are in scripts/go-tools.txt" >&2
  exit 1
fi
