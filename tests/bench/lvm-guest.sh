#!/usr/bin/env bash
# Runs inside the VM (tests/vm/run.sh), for tests/bench/lvm.sh: one 1 GiB volume of
# incompressible data as an LVM thin LV and as an image file, both in guest memory
# (tmpfs), a full cycle of each, then the same 1% of 64 KiB blocks changed in both and
# one timed incremental cycle of each. Prints two JSON lines, `lvm CYCLE` and `file CYCLE`,
# and `commands N PROGRAMS...`: the external commands the incremental lvm cycle ran.
#   lvm-guest.sh RUN BIN      RUN: host scratch dir (read-write) with data.bin, change.bin
set -euo pipefail
RUN=$1 BIN=$2
G=/tmp/cascade-bench
mkdir -p "$G"
truncate -s 1300M "$G/pv.img"
LOOP=$(losetup -f --show "$G/pv.img")
trap 'vgremove -q -f cbench >/dev/null 2>&1; losetup -d "$LOOP"' EXIT
pvcreate -q "$LOOP" && vgcreate -q cbench "$LOOP" >/dev/null
lvcreate -q -L 1200M -c 64k -T cbench/pool >/dev/null
lvcreate -q -V 1024M -n vol cbench/pool >/dev/null
dd if="$RUN/data.bin" of=/dev/cbench/vol bs=4M oflag=direct status=none
cp "$RUN/data.bin" "$G/vol.img"

for kind in lvm file; do
    mkdir -p "$G/$kind"
    if [ $kind = lvm ]; then vol='{ id: vol, driver: lvm-thin, lv: cbench/vol }'; else vol="{ id: vol, driver: file, path: $G/vol.img }"; fi
    # The file driver's copy stays in guest memory beside its volume; journals (1 GiB
    # each after the full cycle) go to the host's disk, through 9p, for both.
    mkdir -p "$RUN/$kind"
    printf 'state-dir: state\njournal-dir: %s\nconsistency-groups:\n  - name: bench\n    volumes:\n      - %s\n' "$RUN/$kind/journals" "$vol" > "$G/$kind/cascade.yaml"
    "$BIN" cycle --config "$G/$kind/cascade.yaml" --cg bench --json > /dev/null
done
# The same blocks, the same bytes, in both.
while read -r block; do
    dd if="$RUN/change.bin" of=/dev/cbench/vol bs=64K skip="${block%:*}" seek="${block#*:}" count=1 oflag=direct conv=notrunc status=none
    dd if="$RUN/change.bin" of="$G/vol.img" bs=64K skip="${block%:*}" seek="${block#*:}" count=1 conv=notrunc status=none
done < "$RUN/blocks.txt"
sync
for kind in lvm file; do
    # Debug logs name every external command the cycle runs (`external command`).
    echo "$kind $(RUST_LOG=cascade=debug "$BIN" cycle --config "$G/$kind/cascade.yaml" --cg bench --json 2> "$G/$kind.log")"
done
echo "commands $(grep -c 'external command' "$G/lvm.log" || true) $(grep 'external command' "$G/lvm.log" | sed 's/.*command=\([^ ]*\).*/\1/' | tr '\n' ' ')"
