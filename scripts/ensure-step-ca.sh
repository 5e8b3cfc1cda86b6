#!/usr/bin/env bash
# Builds step-ca (github.com/smallstep/certificates) from the Go module proxy
# into a git-ignored cache keyed by version, and prints the directory holding
# the binary. As for SPIRE (scripts/ensure-spire.sh), `go install ...@version`
# is not used: the module is downloaded, copied out of the module cache and
# built in place. CGO_ENABLED=0: with cgo step-ca needs libpcsclite (piv-go).
# Exit status 2 means the module proxy could not be reached (the test that
# uses this script skips then); any other failure is status 1.
set -euo pipefail
version="${STEP_CA_VERSION:-v0.30.2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${TPMID_CACHE:-$root/.cache}"
bin="$cache/step-ca-$version/bin"
if [[ -x "$bin/step-ca" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
json="$(go mod download -json "github.com/smallstep/certificates@$version" 2>&1)" || true
dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [[ -z "$dir" || ! -d "$dir" ]]; then
  echo "ensure-step-ca: could not download github.com/smallstep/certificates@$version:" >&2
  printf '%s\n' "$json" >&2
  if printf '%s\n' "$json" | grep -qiE 'dial tcp|connection refused|no such host|i/o timeout|network is unreachable|tls handshake|proxyconnect|server misbehaving'; then
    exit 2
  fi
  exit 1
fi
src="$cache/step-ca-$version/src"
rm -rf "$src"
mkdir -p "$src" "$bin"
cp -r "$dir/." "$src/"
chmod -R u+w "$src"
echo "ensure-step-ca: building step-ca $version (about a minute cold)" >&2
(cd "$src" && CGO_ENABLED=0 go build -ldflags "-X main.Version=$version" -o "$bin/step-ca.tmp" ./cmd/step-ca)
mv "$bin/step-ca.tmp" "$bin/step-ca"
rm -rf "$src"
echo "$bin"
