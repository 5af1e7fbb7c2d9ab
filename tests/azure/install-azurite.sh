#!/usr/bin/env bash
# Installs Azurite, Microsoft's Azure Storage emulator (the npm package `azurite`; its
# Blob service is what the az:// tests run against on 127.0.0.1), into a cache
# directory, so a machine that already has it pays nothing:
#
#   ${CASCADE_TOOLS:-/var/cache/cascade-tools}/azurite/node_modules/.bin/azurite-blob
#
# Needs node and npm (installed with `apt-get install nodejs npm` when missing).
# Idempotent and safe to run concurrently (flock). Exit 0 when the binary is there.
set -euo pipefail

VERSION=3.35.0
TOOLS="${CASCADE_TOOLS:-/var/cache/cascade-tools}"
DIR="$TOOLS/azurite"
BIN="$DIR/node_modules/.bin/azurite-blob"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

installed() {
    [ -x "$BIN" ] && [ "$("$BIN" --version 2>/dev/null)" = "$VERSION" ]
}

if installed; then
    echo "azurite $VERSION: already installed at $BIN"
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "installing: nodejs npm"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q nodejs npm ||
        { $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q nodejs npm; }
fi
mkdir -p "$DIR"
exec 9>"$TOOLS/.azurite.lock"
if ! flock -n 9; then
    echo "azurite $VERSION: another install is running; waiting for $TOOLS/.azurite.lock"
    flock 9
fi
if installed; then
    echo "azurite $VERSION: already installed at $BIN"
    exit 0
fi
start=$(date +%s)
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "azurite@$VERSION"
installed || { echo "azurite $VERSION: $BIN missing or of another version after npm install" >&2; exit 1; }
echo "azurite $VERSION: installed at $BIN in $(($(date +%s) - start)) s"
