#!/usr/bin/env bash
# Installs the S3-compatible test server s3s-fs (a real S3 endpoint on 127.0.0.1,
# backed by a directory; it checks SigV4 signatures) into a cache directory, so a
# machine that already has it pays nothing.
#
#   ${CASCADE_TOOLS:-/var/cache/cascade-tools}/bin/s3s-fs
#
# s3s-fs 0.14.1 is the newest release that builds with our rustc (later versions
# need a newer one). Building it with `cargo install` takes a few minutes on 2 cores.
# Idempotent and safe to run concurrently (flock). Exit 0 when the binary is there.
set -euo pipefail

VERSION=0.14.1
TOOLS="${CASCADE_TOOLS:-/var/cache/cascade-tools}"
BIN="$TOOLS/bin/s3s-fs"
CARGO="${CARGO:-cargo}"

# The binary itself says its version (`s3s-fs 0.14.1`): no cargo, no network.
installed() {
    [ -x "$BIN" ] && [ "$("$BIN" --version 2>/dev/null)" = "s3s-fs $VERSION" ]
}

if installed; then
    echo "s3s-fs $VERSION: already installed at $BIN"
    exit 0
fi

mkdir -p "$TOOLS"
exec 9>"$TOOLS/.s3s-fs.lock"
# One build at a time (parallel `make test` runs, or CI and a developer).
if ! flock -n 9; then
    echo "s3s-fs $VERSION: another install is running; waiting for $TOOLS/.s3s-fs.lock"
    flock 9
fi
# Another run may have installed it while this one waited.
if installed; then
    echo "s3s-fs $VERSION: already installed at $BIN"
    exit 0
fi

echo "s3s-fs $VERSION: not found at $BIN; building it with cargo install (takes a few minutes)"
echo "+ $CARGO install s3s-fs@$VERSION --features binary --locked --root $TOOLS"
start=$(date +%s)
# A private target dir: never the project's own (CARGO_TARGET_DIR may point at it),
# and removed afterwards so the cache holds only the binary.
build_dir="$(mktemp -d "${TMPDIR:-/tmp}/s3s-fs-build.XXXXXX")"
trap 'rm -rf "$build_dir"' EXIT
CARGO_TARGET_DIR="$build_dir" "$CARGO" install "s3s-fs@$VERSION" \
    --features binary --locked --force --root "$TOOLS"

if ! installed; then
    echo "s3s-fs $VERSION: install finished but $BIN does not work" >&2
    exit 1
fi
echo "s3s-fs $VERSION: installed at $BIN in $(( $(date +%s) - start )) s"
