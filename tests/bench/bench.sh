#!/usr/bin/env bash
# Performance bench for cascade: eight measurements, each against a peer tool or a
# limit, printed as a table with PASS/MISS against the aim from the issue.
#
#   1. full-scan diff of two 1 GiB images (warm cache)  vs  cat A B > /dev/null
#   2. incremental cycle, 1% of 64 KiB blocks changed   vs  rsync --inplace --no-whole-file
#      (--ignore-times: rsync must not skip the file on its size+mtime quick check)
#   3. the same cycle on XFS (reflink + FIEMAP)         vs  the full-scan cycle of (2),
#      with a warm page cache (a) and a cold one for both (b)
#   4. replay of the journal onto a file                vs  dd of the same bytes, fsynced
#   5. peak RSS of a full cycle on a 4 GiB volume       vs  128 MiB
#   6-8. the object replica (tests/bench/export.sh): export to S3 vs a plain object_store
#      upload, restore from S3 vs dd, an incremental export vs restic backup
#
#   9-10. the lvm-thin driver in the VM (tests/bench/lvm.sh): bytes read and cycle time of an
#      incremental cycle vs the bytes changed and the file driver's full-scan cycle
#
#  11-12. the daemon (tests/bench/daemon.sh): CPU and memory of an idle daemon with 10 groups,
#      and how late scheduled cycles start, against the aims
#
#     13. the NBD server (tests/bench/nbd.sh): fio write workloads against cascade's server
#      with journaling off (the nbd-serve example) and on (cascade split: throughput, the
#      time from acknowledgement to journal commit), nbdkit and qemu-nbd on a tmpfs image
#
#     14. a split group whose journal falls behind (tests/bench/marking.sh): client
#      throughput while marking vs journaling off, the time to leave marking vs a full
#      read of the volume, bytes read back, map bytes per GiB, FLUSH p99 while marking
#
#     15. a live replica (tests/bench/live.sh): rewind of a 1% change vs a full restore,
#      apply with undo vs without, time to first byte of `serve --at` on 1 and 16 GiB
#
#     16. a grid (tests/bench/grid.sh): bookmark latency across 3 and 10 streams vs one
#      conditional put to the same store, client write p99 with a bookmark every second
#
#     17. an encrypted object replica (tests/bench/sealed.sh): export and restore of 1 GiB
#      to a directory target with `encryption:` vs without
#
#   bash tests/bench/bench.sh [core] [export] [lvm] [daemon] [nbd] [marking] [live] [grid] [sealed]
#                                                  (default all: 1-5 `core`, 6-8 `export`,
#                                                  9-10 `lvm`, 11-12 `daemon`, 13 `nbd`,
#                                                  14 `marking`, 15 `live`, 16 `grid`, 17 `sealed`;
#                                                  `make bench BENCH=export` passes them)
#
# Needs root (loop device + mount for 3, a tmpfs for 13), xfsprogs, rsync, python3, openssl,
# GNU time, restic, s3s-fs (`make s3s-fs`), fio, nbdkit, qemu-nbd, nbdinfo and the
# multipart-put and nbd-serve examples (`make bench` installs and builds them all).
# Scratch space: a fresh directory under ${BENCH_DIR:-/var/tmp/cascade-bench}, about
# 13 GiB at peak, removed at the end; 13 mounts a tmpfs in it for a 4 GiB image and one
# journal (up to 6 GiB: memory, 12 GiB must be available) and writes a few GiB of journal
# to disk beside it.
# Exits 0 whether or not the aims are met; non-zero only when something fails to run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Binaries are looked for where cargo put them: $CARGO_TARGET_DIR if set (as cargo and
# `make bench` honour it), else ROOT/target; CASCADE_BIN names cascade itself.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${CASCADE_BIN:-$TARGET_DIR/release/cascade}
BENCH_DIR=${BENCH_DIR:-/var/tmp/cascade-bench}

GIB=$((1 << 30))
MIB=$((1 << 20))
BLOCK=$((64 << 10))

RUN= LOOP= MNT=
cleanup() {
    set +e
    stop_s3
    mark_cleanup
    grid_cleanup
    nbd_cleanup
    if [[ -n $MNT ]] && mountpoint -q "$MNT"; then umount "$MNT"; fi
    if [[ -n $LOOP ]]; then losetup -d "$LOOP"; fi
    if [[ -n $RUN ]]; then rm -rf "$RUN"; fi
    rmdir "$BENCH_DIR" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench: $*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers

now() { date +%s.%N; }
# calc EXPR: floating-point arithmetic, two decimals.
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
# elapsed_since T0: seconds since T0, three decimals.
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
# timed VAR CMD...: run CMD, its wall time in seconds in $VAR, its (small!) stdout in $VAR_out.
timed() {
    local __var=$1 t0 out
    shift
    t0=$(now)
    out=$("$@")
    printf -v "$__var" '%s' "$(elapsed_since "$t0")"
    printf -v "${__var}_out" '%s' "$out"
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }
# json FIELD < LINE: one field of a JSON line, e.g. `volumes.0.read_bytes`.
json() {
    python3 -c '
import json, sys
v = json.loads(sys.stdin.read())
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"
}
mib() { calc "$1 / $MIB"; }
mbps() { calc "$1 / $MIB / $2"; } # bytes, seconds -> MiB/s
warm() { cat "$@" > /dev/null; }
# drop_caches: empty the page cache, then load cascade itself again, so a cold run
# measures reading the volume, not loading the binary.
drop_caches() { sync && echo 3 > /proc/sys/vm/drop_caches && "$BIN" --version > /dev/null; }

# write_random FILE BYTES: incompressible, fully allocated data (AES-CTR keystream;
# far faster than /dev/urandom). openssl dies of SIGPIPE when head has enough.
write_random() {
    { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:cascade-$RANDOM" < /dev/zero 2>/dev/null || true; } |
        head -c "$2" > "$1"
    [[ $(stat -c %s "$1") == "$2" ]] || die "cannot write $2 random bytes to $1"
}

# change_blocks FILE PERCENT SEED: overwrite PERCENT% of the file's 64 KiB blocks, picked
# at random, with random data; fsynced so no writeback leaks into the timed step.
change_blocks() {
    python3 - "$1" "$2" "$3" "$BLOCK" <<'EOF'
import os, random, sys
path, pct, seed, block = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
nblocks = os.path.getsize(path) // block
picked = rng.sample(range(nblocks), round(nblocks * pct / 100))
with open(path, "r+b") as f:
    for b in picked:
        f.seek(b * block)
        f.write(rng.randbytes(block))
    f.flush()
    os.fsync(f.fileno())
print(len(picked))
EOF
}

# make_config DIR: a one-volume group `bench` on DIR/vol.img, state and journal in DIR.
make_config() {
    cat > "$1/cascade.yaml" <<'EOF'
state-dir: state
journal-dir: journals
consistency-groups:
  - name: bench
    volumes:
      - { id: vol, driver: file, path: vol.img }
EOF
}
cycle() { "$BIN" cycle --config "$1/cascade.yaml" --cg bench --json; }
snapshot_of() { echo "$1/state/bench/snapshots/$(json delta <<< "$2")/vol.img"; }
phases() { # JSON line -> "snapshot X ms + diff/journal Y ms + advance Z ms = T ms"
    echo "snapshot $(json snapshot_ms <<< "$1") ms + diff/journal $(json diff_ms <<< "$1") ms" \
        "+ advance $(json advance_ms <<< "$1") ms = $(json total_ms <<< "$1") ms"
}

ROWS=() MET=0 NOTES=()
ROW_FMT='%-34s %-24s %-30s %7s  %-28s %s'
# row NAME CASCADE PEER RATIO AIM OK(1|0)
row() {
    local verdict=MISS
    if [[ $6 == 1 ]]; then verdict=PASS MET=$((MET + 1)); fi
    ROWS+=("$(printf "$ROW_FMT" "$1" "$2" "$3" "$4x" "$5" "$verdict")")
}
note() { NOTES+=("$*"); }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# ---------------------------------------------------------------- benchmarks

# 1. Full-scan diff: the second and third cycles of an unchanged 1 GiB volume on the
#    ordinary file system (no reflinks: the volume is compared block by block with the
#    copy the driver keeps). Diff time = diff_ms of the cycle; it reads 2 GiB.
bench_diff() {
    echo "[1] full-scan diff, 1 GiB, warm cache" >&2
    local d=$RUN/copy j best=""
    mkdir -p "$d" && make_config "$d"
    write_random "$d/vol.img" "$GIB"
    j=$(cycle "$d")
    note "1: diff = the cycle's diff_ms: block comparison of volume and copy, plus the journal commit"
    note "1: first (full) cycle: $(phases "$j"), stored $(mib "$(json stored_bytes <<< "$j")") MiB"
    for _ in 1 2; do
        warm "$d/vol.img" "$(snapshot_of "$d" "$j")"
        sync
        j=$(cycle "$d")
        [[ $(json changed_bytes <<< "$j") == 0 ]] || die "unchanged volume reported changes: $j"
        local ms
        ms=$(json diff_ms <<< "$j")
        note "1: no-change cycle: $(phases "$j")"
        best=$(min "${best:-$ms}" "$ms")
    done
    local diff_s cat_s a=$d/vol.img b
    b=$(snapshot_of "$d" "$j")
    diff_s=$(calc "$best / 1000")
    warm "$a" "$b"
    timed c1 warm "$a" "$b"
    timed c2 warm "$a" "$b"
    cat_s=$(min "$c1" "$c2")
    local ours peer ratio
    ours=$(mbps $((2 * GIB)) "$diff_s") peer=$(mbps $((2 * GIB)) "$cat_s")
    ratio=$(calc "$ours / $peer")
    row "1 full-scan diff 2x1 GiB (warm)" "$ours MiB/s (${diff_s}s)" "cat: $peer MiB/s (${cat_s}s)" \
        "$ratio" ">= 0.80x of cat" "$(ge "$ratio" 0.8 && echo 1 || echo 0)"
    COPY_DIR=$d
}

# 2. Incremental cycle on the copy path vs rsync's delta transfer to a replica that
#    holds the previous state. Reuses the volume and state of (1).
bench_incremental() {
    echo "[2] incremental cycle, 1% changed, copy path vs rsync" >&2
    local d=$COPY_DIR n j snap
    cp --reflink=never "$d/vol.img" "$RUN/replica.img"
    n=$(change_blocks "$d/vol.img" 1 1)
    note "2: changed $n of $((GIB / BLOCK)) 64 KiB blocks"
    snap=$(ls -d "$d"/state/bench/snapshots/*/vol.img)
    warm "$d/vol.img" "$snap"
    sync
    timed cyc_s cycle "$d"
    j=$cyc_s_out
    note "2: cycle: $(phases "$j")"
    local read stored size
    read=$(json volumes.0.read_bytes <<< "$j") stored=$(json stored_bytes <<< "$j")
    size=$(json volumes.0.size <<< "$j")
    note "2: cascade read: $(mib $((2 * size))) MiB to compare volume and copy, then read_bytes" \
        "$(mib "$read") MiB of changes to journal"
    note "2: cascade wrote: delta stored_bytes $(mib "$stored") MiB (changed_bytes" \
        "$(mib "$(json changed_bytes <<< "$j")") MiB) to the journal, the same changes to its copy"

    warm "$d/vol.img" "$RUN/replica.img"
    sync
    timed rs_s rsync --inplace --no-whole-file --ignore-times --stats "$d/vol.img" "$RUN/replica.img"
    local lit sent
    lit=$(awk -F': ' '/^Literal data/ { gsub(/[^0-9]/, "", $2); print $2 }' <<< "$rs_s_out")
    sent=$(awk -F': ' '/^Total bytes sent/ { gsub(/[^0-9]/, "", $2); print $2 }' <<< "$rs_s_out")
    note "2: rsync: literal data $(mib "$lit") MiB, total bytes sent $(mib "$sent") MiB;" \
        "reads $(mib "$size") MiB source + $(mib "$size") MiB replica, replica $(mib "$(stat -c %s "$RUN/replica.img")") MiB updated in place"
    cmp -s "$d/vol.img" "$RUN/replica.img" || die "rsync replica differs from the volume"

    local ratio
    ratio=$(calc "$rs_s / $cyc_s")
    row "2 incr. cycle 1%, copy path" "${cyc_s}s" "rsync: ${rs_s}s" "$ratio" ">= 3.00x (rsync time / ours)" \
        "$(ge "$ratio" 3 && echo 1 || echo 0)"
    COPY_CYCLE_S=$cyc_s
}

# 3. The same incremental cycle with everything on a reflink XFS: snapshot = FICLONE,
#    diff = FIEMAP extent maps.
bench_reflink() {
    echo "[3] incremental cycle, 1% changed, XFS reflink + FIEMAP" >&2
    local img=$RUN/xfs.img j
    MNT=$RUN/mnt
    truncate -s 3G "$img"
    LOOP=$(losetup -f --show "$img")
    mkfs.xfs -q -m reflink=1 "$LOOP"
    mkdir -p "$MNT"
    mount "$LOOP" "$MNT"
    make_config "$MNT"
    cp --reflink=never "$COPY_DIR/vol.img" "$MNT/vol.img"
    sync
    j=$(cycle "$MNT")
    note "3: first (full) cycle: $(phases "$j")"
    change_blocks "$MNT/vol.img" 1 2 > /dev/null
    sync
    timed rl_s cycle "$MNT"
    j=$rl_s_out
    note "3: reflink cycle: $(phases "$j"), read_bytes $(mib "$(json volumes.0.read_bytes <<< "$j")") MiB," \
        "changed $(mib "$(json changed_bytes <<< "$j")") MiB, stored $(mib "$(json stored_bytes <<< "$j")") MiB"
    local ratio
    ratio=$(calc "$rl_s / $COPY_CYCLE_S")
    row "3a incr. cycle 1%, reflink (warm)" "${rl_s}s" "full-scan cycle: ${COPY_CYCLE_S}s" "$ratio" "< 0.10x of full scan" \
        "$(lt "$ratio" 0.1 && echo 1 || echo 0)"

    # The same pair from a cold page cache: what a cycle costs when the volume is not
    # already in memory, i.e. what reading the whole volume really costs.
    change_blocks "$COPY_DIR/vol.img" 1 3 > /dev/null
    drop_caches
    timed cc_s cycle "$COPY_DIR"
    note "3b: full-scan cycle, cold cache: $(phases "$cc_s_out")"
    change_blocks "$MNT/vol.img" 1 4 > /dev/null
    drop_caches
    timed rc_s cycle "$MNT"
    note "3b: reflink cycle, cold cache: $(phases "$rc_s_out"), read_bytes $(mib "$(json volumes.0.read_bytes <<< "$rc_s_out")") MiB"
    ratio=$(calc "$rc_s / $cc_s")
    row "3b incr. cycle 1%, reflink (cold)" "${rc_s}s" "full-scan cycle: ${cc_s}s" "$ratio" "< 0.10x of full scan" \
        "$(lt "$ratio" 0.1 && echo 1 || echo 0)"
    umount "$MNT" && MNT=
    losetup -d "$LOOP" && LOOP=
    rm -f "$img"
}

# 4. Replay of the copy-path journal (a full delta and three incrementals) onto a new
#    file vs dd writing as many bytes; both end in fsync. The disk is noisy, so the two
#    take turns, three rounds, best of each.
bench_replay() {
    echo "[4] replay vs dd" >&2
    local jd=$COPY_DIR/journals/bench out=$RUN/replay.img dd_out=$RUN/dd.img
    local best="" dd_best="" bytes count report
    for _ in 1 2 3; do
        rm -f "$out" "$dd_out"
        warm "$jd"/*.cjs
        sync
        timed t "$BIN" replay "$jd" --to "$out" --json
        report=$t_out
        bytes=$(json data_bytes <<< "$report")
        best=$(min "${best:-$t}" "$t")
        count=$(((bytes + MIB - 1) / MIB))
        cmp -s "$out" "$COPY_DIR/vol.img" || die "replayed volume differs from the volume"
        rm -f "$out"
        sync
        timed t dd if=/dev/zero of="$dd_out" bs=1M count="$count" conv=fsync status=none
        dd_best=$(min "${dd_best:-$t}" "$t")
        rm -f "$dd_out"
        sync
    done
    note "4: replay: $report"
    local ours peer ratio
    ours=$(mbps "$bytes" "$best") peer=$(mbps $((count * MIB)) "$dd_best")
    ratio=$(calc "$ours / $peer")
    row "4 replay $(mib "$bytes") MiB -> file" "$ours MiB/s (${best}s)" "dd: $peer MiB/s (${dd_best}s)" "$ratio" \
        ">= 0.80x of dd" "$(ge "$ratio" 0.8 && echo 1 || echo 0)"
}

# 5. Peak memory of a first (full) cycle of a fully written 4 GiB volume.
bench_memory() {
    echo "[5] peak RSS, full cycle of 4 GiB" >&2
    rm -rf "$COPY_DIR" "$RUN/replica.img" # free the space of 1-4
    local d=$RUN/mem j rss
    mkdir -p "$d" && make_config "$d"
    write_random "$d/vol.img" $((4 * GIB))
    sync
    /usr/bin/time -v -o "$RUN/time.txt" "$BIN" cycle --config "$d/cascade.yaml" --cg bench --json > "$RUN/mem.json"
    j=$(< "$RUN/mem.json")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$RUN/time.txt")
    note "5: full cycle: $(phases "$j"), read $(mib "$(json volumes.0.read_bytes <<< "$j")") MiB"
    local ours ratio
    ours=$(calc "$rss / 1024")
    ratio=$(calc "$ours / 128")
    row "5 peak RSS, full cycle 4 GiB" "$ours MiB" "limit: 128 MiB" "$ratio" "< 1.00x of limit" \
        "$(lt "$ours" 128 && echo 1 || echo 0)"
    rm -rf "$d"
}

# 6-8: the object replica.
# shellcheck source=tests/bench/export.sh
source "$ROOT/tests/bench/export.sh"
# shellcheck source=tests/bench/lvm.sh
source "$ROOT/tests/bench/lvm.sh"
# shellcheck source=tests/bench/daemon.sh
source "$ROOT/tests/bench/daemon.sh"
# shellcheck source=tests/bench/nbd.sh
source "$ROOT/tests/bench/nbd.sh"
# shellcheck source=tests/bench/marking.sh
source "$ROOT/tests/bench/marking.sh"
# shellcheck source=tests/bench/live.sh
source "$ROOT/tests/bench/live.sh"
# shellcheck source=tests/bench/grid.sh
source "$ROOT/tests/bench/grid.sh"
# shellcheck source=tests/bench/sealed.sh
source "$ROOT/tests/bench/sealed.sh"

# ---------------------------------------------------------------- main

main() {
    local parts=${*:-core export lvm daemon nbd marking live grid sealed} p
    for p in $parts; do
        [[ $p == core || $p == export || $p == lvm || $p == daemon || $p == nbd || $p == marking || $p == live || $p == grid || $p == sealed ]] ||
            die "unknown part \`$p\`: give core, export, lvm, daemon, nbd, marking, live, grid, sealed or several"
    done
    [[ $(id -u) == 0 ]] || die "needs root (loop device and mount for the reflink bench)"
    for t in python3 openssl rsync mkfs.xfs losetup mountpoint; do
        command -v "$t" > /dev/null || die "missing $t"
    done
    [[ -x /usr/bin/time ]] || die "missing GNU time at /usr/bin/time"
    [[ -x $BIN ]] || (cd "$ROOT" && cargo build --release) || die "cannot build cascade"

    mkdir -p "$BENCH_DIR"
    RUN=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
    local t0
    t0=$(now)
    if [[ " $parts " == *" core "* ]]; then
        bench_diff
        bench_incremental
        bench_reflink
        bench_replay
        bench_memory
    fi
    if [[ " $parts " == *" export "* ]]; then
        bench_export
    fi
    if [[ " $parts " == *" lvm "* ]]; then
        bench_lvm
    fi
    if [[ " $parts " == *" daemon "* ]]; then
        bench_daemon
    fi
    if [[ " $parts " == *" nbd "* ]]; then
        bench_nbd
    fi
    if [[ " $parts " == *" marking "* ]]; then
        bench_marking
    fi
    if [[ " $parts " == *" live "* ]]; then
        bench_live
    fi
    if [[ " $parts " == *" grid "* ]]; then
        bench_grid
    fi
    if [[ " $parts " == *" sealed "* ]]; then
        bench_sealed
    fi

    echo
    printf "$ROW_FMT\n" benchmark cascade "peer / limit" ratio aim result
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "notes:"
    printf '  %s\n' "${NOTES[@]}"
    echo
    echo "bench: $MET of ${#ROWS[@]} aims met ($(elapsed_since "$t0")s)"
}

main "$@"
