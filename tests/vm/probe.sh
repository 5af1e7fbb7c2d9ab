#!/usr/bin/env bash
# Exercises, inside the VM, the LVM-thin recipe an lvm-thin driver uses, and prints every
# command with its output, exit code and time, so the exact formats can be read off.
#
#   tests/vm/run.sh --rwdir "$dir" -- tests/vm/probe.sh "$dir"
#
# A VG `cvg` on a loop device over a sparse file in DIR (a --rwdir scratch dir); thin pool
# cvg/pool (256 MiB, chunk 64 KiB), thin LV cvg/v0 (64 MiB); writes, snapshots v0-snap1 and
# v0-snap2; thin ids from `lvs` JSON; thin_delta on a reserved metadata snapshot; checks
# that the reported ranges are exactly the 64 KiB blocks that differ between the two
# snapshots; then the error cases. Exits non-zero if an expectation fails.
# The output of a real run is kept in tests/vm/probe-output.txt.
set -uo pipefail

dir=${1:?usage: probe.sh SCRATCH_DIR (a --rwdir of tests/vm/run.sh)}
VG=cvg
POOL=pool
CHUNK=$((64 * 1024))
MiB=$((1024 * 1024))
failures=0
exec 2>&1

# t CMD...: print the command, run it, print its exit code and wall time.
t() {
    echo "\$ $*"
    local s e rc
    s=$(date +%s%N)
    "$@"
    rc=$?
    e=$(date +%s%N)
    echo "[exit $rc, $(((e - s) / 1000000)) ms]"
    echo
    return $rc
}
die() { echo "PROBE FAILED: $*"; cleanup; exit 1; }
check() { # check WHAT EXPECTED GOT
    if [ "$2" = "$3" ]; then echo "OK: $1"; else echo "MISMATCH: $1"; echo "  expected: $2"; echo "  got:      $3"; failures=$((failures + 1)); fi
}
loop=""
cleanup() {
    echo "== cleanup"
    if vgs "$VG" >/dev/null 2>&1; then
        dmsetup message "$VG-$POOL-tpool" 0 release_metadata_snap >/dev/null 2>&1
        t vgremove -f "$VG"
    fi
    [ -z "$loop" ] || { t pvremove -y "$loop" >/dev/null 2>&1; t losetup -d "$loop"; }
    rm -f "$dir/pv.img"
}
# wr OFFSET_BYTES LENGTH_BYTES: random data into cvg/v0, O_DIRECT, 64 KiB writes.
wr() {
    t dd if=/dev/urandom of=/dev/$VG/v0 bs=64K seek=$(($1 / CHUNK)) count=$(($2 / CHUNK)) \
        oflag=direct conv=notrunc status=none
}

echo "== environment"
uname -r
lvm version | sed 's/^ *//'
echo "thin_delta $(thin_delta --version 2>&1)"
echo "udevd running: $(pidof systemd-udevd >/dev/null && echo yes || echo no)"
echo "/etc/lvm in the guest (virtme-ng-init mounts an empty tmpfs over it: the host lvm.conf is not read, built-in defaults apply):"
ls -A /etc/lvm
lvmconfig --typeconfig default activation/udev_sync activation/udev_rules \
    activation/auto_set_activation_skip allocation/thin_pool_discards allocation/thin_pool_zero \
    allocation/thin_pool_chunk_size_policy devices/use_devicesfile global/thin_check_executable \
    global/thin_check_options 2>&1
echo

echo "== build a VG on a loop device over a sparse file in $dir"
t truncate -s 512M "$dir/pv.img" || die "truncate"
echo "\$ losetup -f --show $dir/pv.img"
loop=$(losetup -f --show "$dir/pv.img") || die "losetup"
echo "$loop"
echo
t pvcreate "$loop" || die pvcreate
t vgcreate "$VG" "$loop" || die vgcreate
t lvcreate --type thin-pool -L 256M --chunksize 64K -n $POOL $VG || die "lvcreate pool"
t lvcreate --type thin -V 64M -n v0 --thinpool $VG/$POOL || die "lvcreate thin"
t ls -l /dev/$VG/ /dev/mapper/
t dmsetup ls
t dmsetup table
t lvs -a -o lv_name,lv_attr,lv_size,pool_lv,origin,thin_id,lv_path,lv_dm_path,chunk_size $VG

echo "== pool chunk size"
t lvs -o chunk_size --units b $VG/$POOL
t lvs --noheadings --nosuffix -o chunk_size --units b $VG/$POOL
chunk=$(lvs --noheadings --nosuffix -o chunk_size --units b $VG/$POOL | tr -d ' ')
check "chunk size in bytes" "$CHUNK" "$chunk"

echo "== writes before snap1: 1 MiB at 0, 10 MiB, 33 MiB, 63 MiB"
for off in 0 10 33 63; do wr $((off * MiB)) $MiB || die "dd"; done

echo "== snap1 (thin snapshot: no size)"
t lvcreate -s -n v0-snap1 $VG/v0 || die "lvcreate -s"
t lvs -o lv_name,lv_attr,origin,thin_id,lv_active $VG
echo "-- plain lvchange -ay on a snapshot (activation skip flag 'k' set):"
t lvchange -ay $VG/v0-snap1
t lvs --noheadings -o lv_name,lv_attr,lv_active $VG/v0-snap1
t ls /dev/mapper/
echo "-- lvchange -ay -K (--ignoreactivationskip):"
t lvchange -ay -K $VG/v0-snap1 || die "lvchange -ay -K"
t lvs --noheadings -o lv_name,lv_attr,lv_active,lv_dm_path $VG/v0-snap1
t ls -l /dev/$VG/ /dev/mapper/

echo "== writes between snap1 and snap2"
echo "   overwrite 1 MiB at 10 MiB (different 160+16), new 1 MiB at 20 MiB (right_only 320+16),"
echo "   overwrite 512 KiB at 33.5 MiB (different 536+8), new 64 KiB at 40 MiB+128 KiB (right_only 642+1),"
echo "   discard 1 MiB at 0 (left_only 0+16)"
wr $((10 * MiB)) $MiB || die dd
wr $((20 * MiB)) $MiB || die dd
wr $((33 * MiB + 512 * 1024)) $((512 * 1024)) || die dd
wr $((40 * MiB + 128 * 1024)) $CHUNK || die dd
t blkdiscard -o 0 -l $MiB /dev/$VG/v0 || die blkdiscard

echo "== snap2, created with -kn (no activation skip) for comparison"
t lvcreate -s -kn -n v0-snap2 $VG/v0 || die "lvcreate -s -kn"
t lvs -o lv_name,lv_attr,lv_active $VG
t lvchange -ay $VG/v0-snap2 || die "lvchange -ay snap2"
t lvs --noheadings -o lv_name,lv_attr,lv_active $VG/v0-snap2

echo "== the report the driver parses"
t lvs -o lv_name,thin_id,pool_lv,data_percent,metadata_percent,lv_attr,lv_size --reportformat json --units b $VG
t lvs -a -o lv_name,thin_id,pool_lv,data_percent,metadata_percent,lv_attr,lv_size,origin,lv_uuid,lv_time,chunk_size --reportformat json --units b --nosuffix $VG
id1=$(lvs --noheadings -o thin_id $VG/v0-snap1 | tr -d ' ')
id2=$(lvs --noheadings -o thin_id $VG/v0-snap2 | tr -d ' ')
id0=$(lvs --noheadings -o thin_id $VG/v0 | tr -d ' ')
echo "thin ids: v0=$id0 v0-snap1=$id1 v0-snap2=$id2"
[ -n "$id1" ] && [ -n "$id2" ] || die "no thin ids"
echo

echo "== metadata snapshot and thin_delta"
t dmsetup status $VG-$POOL-tpool
t dmsetup message $VG-$POOL-tpool 0 reserve_metadata_snap || die "reserve_metadata_snap"
t dmsetup status $VG-$POOL-tpool
echo "-- reserving twice:"
t dmsetup message $VG-$POOL-tpool 0 reserve_metadata_snap
t thin_delta -m --snap1 "$id1" --snap2 "$id2" /dev/mapper/$VG-${POOL}_tmeta || die "thin_delta"
delta=$(thin_delta -m --snap1 "$id1" --snap2 "$id2" /dev/mapper/$VG-${POOL}_tmeta)
t thin_delta -m --verbose --snap1 "$id1" --snap2 "$id2" /dev/mapper/$VG-${POOL}_tmeta
echo "-- snap2 against the live origin v0 (no writes since snap2):"
t thin_delta -m --snap1 "$id2" --snap2 "$id0" /dev/mapper/$VG-${POOL}_tmeta
echo "-- first full (snap1 from nothing): thin_delta needs two devices; --verbose against itself lists all mapped blocks as <same>:"
t thin_delta -m --verbose --snap1 "$id1" --snap2 "$id1" /dev/mapper/$VG-${POOL}_tmeta
echo "-- a thin id that does not exist:"
t thin_delta -m --snap1 "$id1" --snap2 999 /dev/mapper/$VG-${POOL}_tmeta
echo "-- thin_dump of the metadata snapshot (for comparison):"
t thin_dump -m /dev/mapper/$VG-${POOL}_tmeta
t dmsetup message $VG-$POOL-tpool 0 release_metadata_snap || die "release_metadata_snap"
t dmsetup status $VG-$POOL-tpool

echo "== do the reported ranges match the writes?"
got=$(printf '%s\n' "$delta" | sed -n 's/.*<\(different\|left_only\|right_only\) begin="\([0-9]*\)" length="\([0-9]*\)".*/\1 \2 \3/p' | sort -k2,2n | tr '\n' ';')
check "thin_delta ranges (kind begin length, in 64 KiB blocks)" \
    "left_only 0 16;different 160 16;right_only 320 16;different 536 8;right_only 642 1;" "$got"
echo "-- 64 KiB blocks whose content differs between /dev/$VG/v0-snap1 and /dev/$VG/v0-snap2:"
t sync
differs=$(perl -e '
    my ($n, @r, $s) = ($ARGV[2]);
    open(my $a, "<:raw", $ARGV[0]) or die "$ARGV[0]: $!"; open(my $b, "<:raw", $ARGV[1]) or die "$ARGV[1]: $!";
    my $i = 0;
    for (; ; $i++) {
        my $x = ""; my $y = "";
        my $ra = read($a, $x, $n); my $rb = read($b, $y, $n);
        last if !$ra && !$rb;
        if ($x ne $y) { $s = $i unless defined $s; }
        elsif (defined $s) { push @r, "$s " . ($i - $s); undef $s; }
        if ($ra < $n) { $i++; last; }
    }
    push @r, "$s " . ($i - $s) if defined $s;
    print map { "$_;" } @r;
' "/dev/$VG/v0-snap1" "/dev/$VG/v0-snap2" "$CHUNK")
check "differing blocks (begin length)" "$(printf '%s' "$got" | tr ';' '\n' | awk 'NF{print $2, $3}' | tr '\n' ';')" "$differs"
t cmp -n $MiB /dev/$VG/v0-snap2 /dev/zero
echo "(the discarded range reads back as zeros in snap2)"
echo

echo "== error cases"
echo "-- thin_delta -m with no metadata snapshot reserved:"
t thin_delta -m --snap1 "$id1" --snap2 "$id2" /dev/mapper/$VG-${POOL}_tmeta
echo "-- thin_delta without -m on the live metadata of an active pool:"
t thin_delta --snap1 "$id1" --snap2 "$id2" /dev/mapper/$VG-${POOL}_tmeta
echo "-- release when nothing is reserved:"
t dmsetup message $VG-$POOL-tpool 0 release_metadata_snap
echo "-- lvcreate -s of a non-thin (linear) LV, no size:"
t lvcreate -L 8M -n lin $VG
t lvcreate -s -n lin-snap $VG/lin
echo "-- same with a size: an old-style COW snapshot (dm-snapshot), not thin:"
t lvcreate -s -L 8M -n lin-snap $VG/lin
t lvs -o lv_name,lv_attr,origin,pool_lv,thin_id,segtype --reportformat json $VG/lin-snap
echo "-- snapshot name that already exists:"
t lvcreate -s -n v0-snap1 $VG/v0
echo "-- snapshot of an LV that does not exist:"
t lvcreate -s -n nope-snap $VG/nope

echo "== removing a snapshot and deactivating"
t lvremove -y $VG/v0-snap1
t lvchange -an $VG/v0-snap2
t lvs -a -o lv_name,lv_attr,thin_id,data_percent $VG
echo "-- pool device names when every thin LV is inactive:"
t lvchange -an $VG/v0
t dmsetup ls
t dmsetup message $VG-$POOL-tpool 0 reserve_metadata_snap
t lvchange -ay $VG/v0
t dmsetup ls

cleanup
echo
if [ "$failures" -gt 0 ]; then echo "PROBE: $failures mismatch(es)"; exit 1; fi
echo "PROBE: all checks passed"
