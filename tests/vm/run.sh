#!/usr/bin/env bash
# Runs a command inside a small VM that has device-mapper, lvm2, thin-provisioning-tools and
# nbd-client (the kernel's NBD client)
# (this host kernel has no device-mapper). Install the parts first: `make vm-deps`.
#
#   tests/vm/run.sh [OPTIONS] -- CMD...
#
# The VM (virtme-ng over QEMU, TCG: KVM fails here) boots Debian's stock kernel
# (newest /boot/vmlinuz-*-amd64) over the host's own root file system, shared read-only
# over 9p; /etc /lib /home /opt /srv /usr /var /tmp get a throw-away tmpfs overlay, so
# anything the guest writes there is lost at power-off; every other path (e.g. /work) is
# read-only. Use --rwdir for results and scratch files. Host paths (the cascade binary,
# test fixtures) are visible at the same paths. /etc/lvm is an empty tmpfs in the guest
# (virtme-ng-init), so LVM runs on built-in defaults, never on the host's lvm.conf.
#
# CMD: one argument is a shell script (`-- 'lvs; echo $?'`); several are an argv, each
# word passed as is (`-- ./target/debug/cascade cycle --config "$cfg" --cg g`).
# Before CMD the guest loads loop, dm-thin-pool and dm-snapshot and exports
# LVM_SUPPRESS_FD_WARNINGS=1. CMD runs under bash in the current directory (if visible).
#
# CMD's stdout and stderr come back on this script's stdout and stderr, and its exit code
# is this script's exit code. Other exit codes: 124 VM timed out (--timeout), 125 this
# script or the guest setup failed (bad options, missing kernel/vng, modprobe failed),
# 255 the VM stopped without CMD's exit code (kernel panic, QEMU error: try --verbose).
# A boot costs ~25-35 s (TCG), so run many checks per VM rather than one VM per check.
#
# Options:
#   --rwdir DIR      share host DIR read-write at the same path (repeatable; created if missing)
#   --env NAME[=VAL] set NAME in the guest (VAL, or the host's value of NAME) (repeatable)
#   --cwd DIR        guest working directory (default: the current directory)
#   --memory SIZE    guest memory (default 2G)
#   --cpus N         guest CPUs (default: CASCADE_VM_CPUS, else vng's, = host cores)
#   --timeout SECS   kill the VM after SECS (default 1800; 0 = none)
#   --kernel PATH    kernel image (default: newest /boot/vmlinuz-*-amd64; env CASCADE_VM_KERNEL)
#   --verbose        show the guest's kernel and init messages on stderr
set -euo pipefail

die() { echo "vm/run.sh: $*" >&2; exit 125; }

rwdirs=()
envs=()
cwd=""
memory=2G
cpus="${CASCADE_VM_CPUS:-}"
timeout_s=${CASCADE_VM_TIMEOUT:-1800}
kernel=${CASCADE_VM_KERNEL:-}
verbose=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rwdir) [ $# -ge 2 ] || die "--rwdir needs a directory"; rwdirs+=("$2"); shift 2 ;;
        --rwdir=*) rwdirs+=("${1#--rwdir=}"); shift ;;
        --env) [ $# -ge 2 ] || die "--env needs NAME[=VALUE]"; envs+=("$2"); shift 2 ;;
        --cwd) [ $# -ge 2 ] || die "--cwd needs a directory"; cwd=$2; shift 2 ;;
        --memory) [ $# -ge 2 ] || die "--memory needs a size"; memory=$2; shift 2 ;;
        --cpus) [ $# -ge 2 ] || die "--cpus needs a number"; cpus=$2; shift 2 ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; timeout_s=$2; shift 2 ;;
        --kernel) [ $# -ge 2 ] || die "--kernel needs a path"; kernel=$2; shift 2 ;;
        --verbose|-v) verbose=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown option '$1' (usage: tests/vm/run.sh [--rwdir DIR]... -- CMD...)" ;;
    esac
done
[ $# -gt 0 ] || die "no command given (usage: tests/vm/run.sh [--rwdir DIR]... -- CMD...)"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "--timeout: '$timeout_s' is not a number of seconds"

command -v vng >/dev/null || die "vng (virtme-ng) not found: run 'make vm-deps'"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run 'make vm-deps'"
if [ -z "$kernel" ]; then
    kernel=$(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$kernel" ] || die "no /boot/vmlinuz-*-amd64: run 'make vm-deps'"
fi
[ -r "$kernel" ] || die "kernel $kernel is not readable"
kver=${kernel##*/vmlinuz-}
[ -d "/lib/modules/$kver" ] || die "no modules for $kernel in /lib/modules/$kver"

# The guest script lives in a host temp dir: the guest sees the host's /tmp (read-only
# lower layer), and this keeps CMD off the kernel command line (which vng's --exec uses
# and which holds at most 2 KiB).
tmp=$(mktemp -d /tmp/cascade-vm.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
guest=$tmp/guest.sh
{
    echo '#!/bin/bash'
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH'
    echo 'export LVM_SUPPRESS_FD_WARNINGS=1'
    for e in "${envs[@]+"${envs[@]}"}"; do
        name=${e%%=*}
        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env: bad name '$name'"
        if [[ "$e" == *=* ]]; then val=${e#*=}; else val=${!name-}; fi
        printf 'export %s=%q\n' "$name" "$val"
    done
    cat <<'SETUP'
if ! err=$(modprobe -a loop dm-thin-pool dm-snapshot 2>&1); then
    echo "vm/run.sh (guest): modprobe loop dm-thin-pool dm-snapshot failed: $err" >&2
    exit 125
fi
SETUP
    if [ $# -eq 1 ]; then
        printf 'exec bash -c %q cascade-vm\n' "$1"
    else
        printf 'exec'; printf ' %q' "$@"; printf '\n'
    fi
} >"$guest"
chmod 755 "$guest"

args=(--run "$kernel" --force-9p --disable-kvm --memory "$memory")
[ -z "$cpus" ] || args+=(--cpus "$cpus")
for d in "${rwdirs[@]+"${rwdirs[@]}"}"; do
    mkdir -p "$d"
    d=$(cd "$d" && pwd -P)
    args+=(--rwdir "$d")
done
[ -z "$cwd" ] || args+=(--cwd "$cwd")
# Udev's coldplug loads a module for every emulated device; under TCG kvm_amd alone
# takes ~8 s, and none of these is of any use here. dm-*, loop and 9p stay.
args+=(--append "module_blacklist=kvm,kvm_amd,kvm_intel,powernow_k8,iTCO_wdt,i6300esb,sr_mod,cdrom,pcspkr,i2c_i801,lpc_ich,serio_raw")
[ -z "$verbose" ] || args+=(--verbose)
args+=(--exec "bash $guest")

run_vng() {
    if [ "$timeout_s" -gt 0 ]; then
        # timeout signals its whole process group: vng and the qemu it forks.
        timeout --kill-after=10 "$timeout_s" vng "${args[@]}"
    else
        vng "${args[@]}"
    fi
}
# QEMU opens the guest's stdout/stderr channels as /proc/self/fd/1 and /proc/self/fd/2
# with O_TRUNC: were those regular files (`run.sh >>log`), it would empty them. Through
# these pipes it cannot; the guest's stdout and stderr stay apart.
{
    { run_vng </dev/null 3>&- && echo 0 >"$tmp/rc" || echo $? >"$tmp/rc"; } 2>&1 1>&3 3>&- | cat >&2 3>&-
} 3>&1 | cat
rc=$(cat "$tmp/rc" 2>/dev/null || echo 125)
if [ "$timeout_s" -gt 0 ] && { [ "$rc" = 124 ] || [ "$rc" = 137 ]; }; then
    echo "vm/run.sh: VM timed out after ${timeout_s}s" >&2
    exit 124
fi
exit "$rc"
