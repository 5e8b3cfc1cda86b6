#!/usr/bin/env bash
# dist.sh: release artifacts into $DIST (default dist/): for each of
# $PLATFORMS (default linux/amd64 linux/arm64), the three binaries built
# static (CGO_ENABLED=0: SQLite is modernc's pure Go, the TPM is reached over
# /dev/tpmrm0 or a socket), a tarball tpmid_<version>_<os>_<arch>.tar.gz,
# and SHA256SUMS over the tarballs and every binary. Then one
# `plugin_checksum = "<sha256>"` line per plugin binary, to paste into
# spire-server's and spire-agent's NodeAttestor "tpm" block.
set -euo pipefail

GO=${GO:-go}
DIST=${DIST:-dist}
PLATFORMS=${PLATFORMS:-linux/amd64 linux/arm64}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}

cd "$(dirname "$0")/.."
rm -rf "$DIST"
mkdir -p "$DIST"
# The commit time makes the tarballs reproducible.
mtime=$(git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)

for platform in $PLATFORMS; do
	os=${platform%/*} arch=${platform#*/}
	name="tpmid_${VERSION}_${os}_${arch}"
	out="$DIST/$name"
	mkdir -p "$out"
	echo "dist: building $name" >&2
	# -buildvcs=true overrides a GOFLAGS=-buildvcs=false, so that
	# `--version` names the revision; -trimpath keeps local paths out.
	buildvcs=-buildvcs=true
	git rev-parse --git-dir >/dev/null 2>&1 || buildvcs=-buildvcs=false
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch $GO build $buildvcs -trimpath -ldflags='-s -w' \
		-o "$out/" ./cmd/tpmid ./cmd/tpmid-server-plugin ./cmd/tpmid-agent-plugin
	cp LICENSE README.md "$out/"
	tar -C "$DIST" --sort=name --mtime="$mtime" --owner=0 --group=0 --numeric-owner \
		-czf "$DIST/$name.tar.gz" "$name"
done

(
	cd "$DIST"
	sha256sum -- *.tar.gz */tpmid */tpmid-server-plugin */tpmid-agent-plugin > SHA256SUMS
)

echo
echo "dist: $DIST/SHA256SUMS"
for platform in $PLATFORMS; do
	os=${platform%/*} arch=${platform#*/}
	name="tpmid_${VERSION}_${os}_${arch}"
	for plugin in tpmid-server-plugin tpmid-agent-plugin; do
		sum=$(sha256sum "$DIST/$name/$plugin" | cut -d' ' -f1)
		printf '%-14s %-20s plugin_checksum = "%s"\n' "$os/$arch" "$plugin" "$sum"
	done
done
