#!/usr/bin/env bash
# Builds spire-server and spire-agent from the Go module proxy into a
# git-ignored cache keyed by version, and prints the directory holding them.
# `go install ...@version` is refused by this proxy (see docs/decisions), so
# the module is downloaded, copied out of the module cache and built in place.
set -euo pipefail
version="${SPIRE_VERSION:-v1.13.3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${TPMID_CACHE:-$root/.cache}"
bin="$cache/spire-$version/bin"
if [[ -x "$bin/spire-server" && -x "$bin/spire-agent" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
dir="$(go mod download -json "github.com/spiffe/spire@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -n "$dir" ]] || { echo "ensure-spire: could not download github.com/spiffe/spire@$version" >&2; exit 1; }
src="$cache/spire-$version/src"
rm -rf "$src"
mkdir -p "$src" "$bin"
cp -r "$dir/." "$src/"
chmod -R u+w "$src"
echo "ensure-spire: building spire-server and spire-agent $version (a cold build takes several minutes)" >&2
(cd "$src" && CGO_ENABLED=1 go build -o "$bin/spire-server" ./cmd/spire-server && go build -o "$bin/spire-agent" ./cmd/spire-agent)
rm -rf "$src"
echo "$bin"
