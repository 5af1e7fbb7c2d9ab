#!/usr/bin/env bash
# Installs moto's S3 server (the pip package `moto[server]`, with boto3), the S3 test
# server for what s3s-fs does not implement: server-side encryption, storage classes
# and Object Lock, recorded per object and read back with boto3
# (tests/s3/s3ctl.py). Into a Python venv in a cache directory, so a machine that
# already has it pays nothing:
#
#   ${CASCADE_TOOLS:-/var/cache/cascade-tools}/moto-venv/bin/moto_server
#
# Needs python3 with venv (python3-venv is installed with apt-get when missing).
# Idempotent and safe to run concurrently (flock). Exit 0 when it is there.
set -euo pipefail

VERSION=5.2.5
TOOLS="${CASCADE_TOOLS:-/var/cache/cascade-tools}"
VENV="$TOOLS/moto-venv"
PY="$VENV/bin/python"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

installed() {
    [ -x "$VENV/bin/moto_server" ] && "$PY" - "$VERSION" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version
import boto3, flask
sys.exit(version("moto") != sys.argv[1])
EOF
}

if installed; then
    echo "moto $VERSION: already installed in $VENV"
    exit 0
fi
if ! python3 -c 'import ensurepip' 2>/dev/null; then
    echo "installing: python3-venv"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q python3-venv ||
        { $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q python3-venv; }
fi
mkdir -p "$TOOLS"
exec 9>"$TOOLS/.moto.lock"
if ! flock -n 9; then
    echo "moto $VERSION: another install is running; waiting for $TOOLS/.moto.lock"
    flock 9
fi
if installed; then
    echo "moto $VERSION: already installed in $VENV"
    exit 0
fi
start=$(date +%s)
python3 -m venv --clear "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$VERSION" boto3
installed || { echo "moto $VERSION: not importable after pip install" >&2; exit 1; }
echo "moto $VERSION: installed in $VENV in $(($(date +%s) - start)) s"
