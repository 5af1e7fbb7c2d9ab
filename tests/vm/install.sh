#!/usr/bin/env bash
# Installs what the VM tests need, only what is missing (a warm machine pays ~1 s):
#   qemu-system-x86, Debian's stock kernel (linux-image-amd64), lvm2,
#   thin-provisioning-tools, busybox-static, nbd-client (the kernel's NBD client, for
#   tests/nbd_kernel.rs), python3, python3-pip (apt) and virtme-ng (pip, pinned).
# The host kernel has no device-mapper; LVM runs inside a vng/QEMU (TCG) VM that boots
# /boot/vmlinuz-*-amd64 over the host root file system (see tests/vm/run.sh).
# Prints what it does; any failure stops it with a non-zero exit.
set -euo pipefail

VIRTME_NG_VERSION=${VIRTME_NG_VERSION:-1.42}
APT_PACKAGES=(qemu-system-x86 linux-image-amd64 lvm2 thin-provisioning-tools busybox-static nbd-client python3 python3-pip)

say() { echo "vm-deps: $*"; }
die() { echo "vm-deps: ERROR: $*" >&2; exit 1; }
trap 'echo "vm-deps: ERROR: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# --- apt packages --------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing apt packages: ${missing[*]}"
    # lvm2's, udev's and nbd-client's maintainer scripts try to start services; in a container
    # without a running init that fails noisily or hangs. policy-rc.d (exit 101 =
    # "action not allowed") makes invoke-rc.d/deb-systemd-invoke skip every start,
    # for this install only. Nothing on the host needs those services.
    policy=/usr/sbin/policy-rc.d
    placed_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        placed_policy=1
    fi
    cleanup_policy() { [ -z "$placed_policy" ] || $SUDO rm -f "$policy"; }
    trap cleanup_policy EXIT
    apt_install() {
        # INITRD=No: the kernel's postinst skips update-initramfs (~40 s, twice with the
        # trigger); vng builds its own initramfs, and the host never boots this kernel.
        $SUDO env DEBIAN_FRONTEND=noninteractive INITRD=No apt-get install -y -q \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            --no-install-recommends "${missing[@]}"
    }
    if ! apt_install; then
        say "apt-get install failed; running apt-get update and retrying"
        $SUDO apt-get update -q
        apt_install
    fi
    cleanup_policy
    trap - EXIT
else
    say "apt packages already installed: ${APT_PACKAGES[*]}"
fi

# --- virtme-ng (vng) -------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
have_vng_version() {
    "$PYTHON" -m pip show virtme-ng 2>/dev/null | sed -n 's/^Version: //p'
}
cur=$(have_vng_version || true)
if [ "$cur" = "$VIRTME_NG_VERSION" ] && command -v vng >/dev/null; then
    say "virtme-ng $cur already installed ($(command -v vng))"
else
    say "installing virtme-ng==$VIRTME_NG_VERSION with $PYTHON -m pip (had: ${cur:-none})"
    "$PYTHON" -m pip install -q --disable-pip-version-check "virtme-ng==$VIRTME_NG_VERSION"
    # pyenv needs a rehash to expose new console scripts on PATH.
    if command -v pyenv >/dev/null; then pyenv rehash || true; fi
    command -v vng >/dev/null || die "virtme-ng installed but 'vng' is not on PATH ($PATH)"
    say "virtme-ng $(have_vng_version) installed ($(command -v vng))"
fi

# --- checks --------------------------------------------------------------------------
kernel=$(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel" ] || die "no /boot/vmlinuz-*-amd64 after installing linux-image-amd64"
[ -r "$kernel" ] || die "$kernel is not readable"
kver=${kernel#/boot/vmlinuz-}
[ -d "/lib/modules/$kver" ] || die "/lib/modules/$kver missing (modules for $kernel)"
for t in qemu-system-x86_64 lvm thin_delta busybox nbd-client vng; do
    command -v "$t" >/dev/null || die "'$t' not found on PATH after install"
done
say "kernel: $kernel"
say "ok: qemu $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}'), lvm2 $(dpkg-query -W -f='${Version}' lvm2), thin-provisioning-tools $(thin_delta --version 2>&1 | head -n1), vng $(have_vng_version)"
