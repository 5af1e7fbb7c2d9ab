#!/usr/bin/env bash
# Installs the Google Cloud Storage test server gcp-storage-emulator (the pip package;
# tests/gcs/xml_api.py runs it with the XML API that object_store speaks, on
# 127.0.0.1) into a Python venv in a cache directory, so a machine that already has
# it pays nothing:
#
#   ${CASCADE_TOOLS:-/var/cache/cascade-tools}/gcs-venv/bin/python tests/gcs/xml_api.py
#
# Needs python3 with venv (python3-venv is installed with apt-get when missing).
# Idempotent and safe to run concurrently (flock). Exit 0 when the package is there.
set -euo pipefail

VERSION=2026.7.19
TOOLS="${CASCADE_TOOLS:-/var/cache/cascade-tools}"
VENV="$TOOLS/gcs-venv"
PY="$VENV/bin/python"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

# The venv's python imports the server at this version (and google-crc32c with it):
# no pip, no network.
installed() {
    [ -x "$PY" ] && "$PY" - "$VERSION" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version
import gcp_storage_emulator.server
sys.exit(version("gcp-storage-emulator") != sys.argv[1])
EOF
}

if installed; then
    echo "gcp-storage-emulator $VERSION: already installed in $VENV"
    exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "installing: python3-venv"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q python3-venv ||
        { $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q python3-venv; }
fi
mkdir -p "$TOOLS"
exec 9>"$TOOLS/.gcs-emulator.lock"
if ! flock -n 9; then
    echo "gcp-storage-emulator $VERSION: another install is running; waiting for $TOOLS/.gcs-emulator.lock"
    flock 9
fi
if installed; then
    echo "gcp-storage-emulator $VERSION: already installed in $VENV"
    exit 0
fi
start=$(date +%s)
# A venv without a working python (moved, or its python gone) is made anew.
[ -x "$PY" ] && "$PY" -c '' 2>/dev/null || python3 -m venv --clear "$VENV"
"$PY" -m pip install -q --disable-pip-version-check "gcp-storage-emulator==$VERSION"
installed || { echo "gcp-storage-emulator $VERSION: not importable from $PY after pip install" >&2; exit 1; }
echo "gcp-storage-emulator $VERSION: installed in $VENV in $(($(date +%s) - start)) s"
