# Sourced by bench.sh (its helpers, ROWS and NOTES; nbd.sh's nbd_start and stop_nbd):
# a split group whose journal cannot keep up (issue 13). The journal lives on a small
# tmpfs that fills at once, so the splitter marks from the first seconds on; the room is
# given back by a remount.
#
#  14a. random 64 KiB writes, iodepth 16, while marking   vs  journaling off (nbd-serve), MiB/s
#  14b. sequential 1 MiB writes, iodepth 8, while marking  vs  journaling off, MiB/s
#  14c. time to leave marking once the journal has room again, after 1 GiB of random
#       64 KiB writes dirtied a $MARK_SIZE volume         vs  reading the whole volume
#       (dd, direct I/O: what any full resynchronisation must at least do)
#  14d. bytes the resynchronisation read back               vs  the bytes the client wrote
#       while marking
#  14e. bytes of map kept per GiB of volume (the write-intent file, two epochs, and the
#       marking map in memory)                            vs  DRBD's bitmap, 32 KiB/GiB
#  14f. FLUSH p99 (fio --fsync=1, 4 KiB writes, iodepth 1) while marking
#                                                         vs  the same, journal active
#
# Aims (issue 13): 14a-b at least 0.95x, 14c under 0.10x, 14d at most 1.20x; 14e and
# 14f are reported against the peer and the active splitter (aims: at most DRBD's, at
# most 1.5x).
#
# The fio image ($NBD_SIZE, on a tmpfs as in 13) is served by nbd-serve and by
# `cascade split`; the $MARK_SIZE volume of 14c-d is a fresh sparse file under
# $BENCH_DIR (a new VM disk), and the full read is of a file of the same size on the
# same disk, allocated (dd of zeros), with the page cache dropped first. The
# resynchronisation reads regions fio wrote moments before: warm in the page cache,
# as they are on a primary.

MARK_SIZE=${MARK_SIZE:-$((16 * GIB))}
MARK_JOURNAL_FULL=${MARK_JOURNAL_FULL:-$((24 * MIB))}
MARK_DIR= MARK_CFG= MARK_ERR=

# mark_cleanup: what a failed run leaves (bench.sh's cleanup calls it).
mark_cleanup() {
    [[ -n $NBD_PID ]] && stop_nbd
    local m
    for m in "$MARK_DIR/journal" "$MARK_DIR/tmpfs"; do
        if [[ -n $MARK_DIR ]] && mountpoint -q "$m"; then umount "$m"; fi
    done
    return 0
}

# mark_start IMAGE JOURNAL_DIR QUEUE: `cascade split` of IMAGE with its journal in
# JOURNAL_DIR (a tmpfs the caller mounted) and its state beside the image; NBD_PID,
# NBD_URI once its base is journalled.
mark_start() {
    MARK_CFG=$MARK_DIR/cascade.yaml MARK_ERR=$MARK_DIR/stderr
    cat > "$MARK_CFG" <<YAML
state-dir: $MARK_DIR/state
journal-dir: $2
consistency-groups:
  - name: bench
    splitter: { commit-every: 100ms, queue: $3 }
    volumes:
      - { id: $NBD_EXPORT, driver: file, path: $1 }
YAML
    rm -rf "$MARK_DIR/state" "${2:?}"/*
    split_serve "$MARK_CFG" "$MARK_DIR" && return 0
    die "cascade split did not start: $(tail -5 "$MARK_ERR")"
}
mark_zero() { dd if=/dev/zero of="$NBD_IMAGE" bs=1M count=$((NBD_SIZE / MIB)) conv=notrunc,fsync status=none; }
# mark_status FIELD: a field of the running splitter's `cascade status --json`.
mark_status() {
    "$BIN" status --config "$MARK_CFG" --json |
        python3 -c "import json, sys; print(json.load(sys.stdin)['groups'][0]['splitter']['serving']['$1'])"
}
# mark_stop [full]: SIGTERM; it exits 0, or (full: its journal still has no room)
# 1, having said so: the next start would read back what it marked.
mark_stop() {
    local rc=0
    kill -TERM "$NBD_PID"
    wait "$NBD_PID" || rc=$?
    NBD_PID=
    [[ $rc == 0 ]] && return 0
    [[ ${1:-} == full && $rc == 1 ]] && grep -q 'No space left' "$MARK_ERR" && return 0
    die "cascade split exited with $rc: $(tail -5 "$MARK_ERR")"
}
# mark_fio NAME FIO-ARGS...: fio against NBD_URI; prints "MiB/s sync_p99_us".
mark_fio() {
    local out=$MARK_DIR/$1.json name=$1
    shift
    fio --name="$name" --ioengine=nbd --uri="$NBD_URI" --output-format=json --output="$out" "$@" \
        > /dev/null 2>> "$NBD_LOG" || die "fio $name failed: $(tail -5 "$NBD_LOG")"
    python3 - "$out" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
sync = j.get("sync", {}).get("lat_ns", {}).get("percentile", {}).get("99.000000", 0) / 1000
print(f"{j['write']['bw_bytes'] / 2**20:.2f} {sync:.1f}")
PY
}

bench_marking() {
    echo "[14] a split group whose journal falls behind: marking and resynchronising" >&2
    local t
    for t in fio nbdinfo; do command -v "$t" > /dev/null || die "missing $t (make deps installs it)"; done
    [[ -x $NBD_SERVE_BIN ]] || die "missing $NBD_SERVE_BIN (make bench builds the nbd-serve example)"
    MARK_DIR=$RUN/marking
    mkdir -p "$MARK_DIR/tmpfs" "$MARK_DIR/journal"
    NBD_LOG=$MARK_DIR/servers.log
    local avail
    avail=$(($(awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo) * 1024))
    [[ $avail -gt $((NBD_SIZE + 4 * GIB)) ]] ||
        die "$(mib "$avail") MiB of memory available: not enough for a $(mib "$NBD_SIZE") MiB image on a tmpfs"
    mount -t tmpfs -o size=$((NBD_SIZE + 64 * MIB)) tmpfs "$MARK_DIR/tmpfs"
    NBD_MNT=$MARK_DIR/tmpfs
    mount -t tmpfs -o size="$MARK_JOURNAL_FULL" tmpfs "$MARK_DIR/journal"
    NBD_IMAGE=$MARK_DIR/tmpfs/nbd.img

    # 14a-b: throughput while marking, against journaling off.
    local -a loads=("a rand-64K-qd16 randwrite 64k 16" "b seq-1M-qd8 write 1M 8")
    local l id name rw bs depth off on mode ratio
    for l in "${loads[@]}"; do
        read -r id name rw bs depth <<< "$l"
        # Zeroed before each run (allocated, as in 13): the split's base then journals
        # zero records only, whatever the run before wrote.
        mark_zero
        nbd_start cascade
        off=$(mark_fio "$name-off" --rw="$rw" --bs="$bs" --iodepth="$depth" --norandommap \
            --time_based --runtime="$NBD_RUNTIME" --ramp_time=2)
        stop_nbd
        mark_zero
        mark_start "$NBD_IMAGE" "$MARK_DIR/journal" 64MiB
        on=$(mark_fio "$name-marking" --rw="$rw" --bs="$bs" --iodepth="$depth" --norandommap \
            --time_based --runtime="$NBD_RUNTIME" --ramp_time=2)
        mode=$(mark_status mode)
        mark_stop full
        [[ $mode == marking ]] || die "14$id: the splitter was $mode, not marking, at the end of the run"
        read -r off _ <<< "$off"
        read -r on _ <<< "$on"
        ratio=$(calc "$on / $off")
        row "14$id $name while marking" "$on MiB/s" "journaling off: $off" "$ratio" ">= 0.95x of off" \
            "$(ge "$ratio" 0.95 && echo 1 || echo 0)"
    done

    # 14f: FLUSH after every write, with the journal active and while marking.
    local flush_active flush_marking
    umount "$MARK_DIR/journal"
    mount -t tmpfs -o size=$((2 * GIB)) tmpfs "$MARK_DIR/journal"
    mark_zero
    mark_start "$NBD_IMAGE" "$MARK_DIR/journal" 64MiB
    flush_active=$(mark_fio flush-active --rw=randwrite --bs=4k --iodepth=1 --fsync=1 \
        --time_based --runtime="$NBD_RUNTIME" --ramp_time=2)
    mode=$(mark_status mode)
    mark_stop
    [[ $mode == active ]] || die "14f: the splitter was $mode with room for its journal"
    umount "$MARK_DIR/journal"
    mount -t tmpfs -o size="$MARK_JOURNAL_FULL" tmpfs "$MARK_DIR/journal"
    mark_zero
    mark_start "$NBD_IMAGE" "$MARK_DIR/journal" 1MiB
    # Fill the journal first, so that the whole measured run marks.
    mark_fio flush-fill --rw=write --bs=1M --iodepth=8 --size=$((2 * MARK_JOURNAL_FULL)) > /dev/null
    flush_marking=$(mark_fio flush-marking --rw=randwrite --bs=4k --iodepth=1 --fsync=1 \
        --time_based --runtime="$NBD_RUNTIME" --ramp_time=2)
    mode=$(mark_status mode)
    mark_stop full
    [[ $mode == marking ]] || die "14f: the splitter was $mode, not marking, at the end of the run"
    rm -f "$NBD_IMAGE"
    umount "$MARK_DIR/tmpfs"
    NBD_MNT=

    # 14c-e: 1 GiB of random 64 KiB writes into a $MARK_SIZE volume while marking;
    # then room, and the time until it is active again.
    local vol=$MARK_DIR/vol.img ref=$MARK_DIR/full.img t0 full_s resync_s read_back dirty written map_file map_bytes
    # What a full resynchronisation reads: the whole volume, allocated, from the disk.
    dd if=/dev/zero of="$ref" bs=4M count=$((MARK_SIZE / (4 * MIB))) conv=fsync status=none
    drop_caches
    t0=$(now)
    dd if="$ref" of=/dev/null bs=4M iflag=direct status=none
    full_s=$(elapsed_since "$t0")
    rm -f "$ref"
    # The volume: a fresh (sparse) one, so its base reads nothing but its holes.
    truncate -s "$MARK_SIZE" "$vol"
    umount "$MARK_DIR/journal"
    mount -t tmpfs -o size="$MARK_JOURNAL_FULL" tmpfs "$MARK_DIR/journal"
    mark_start "$vol" "$MARK_DIR/journal" 64MiB
    mark_fio dirty --rw=randwrite --bs=64k --iodepth=16 --size="$MARK_SIZE" --io_size=$GIB > /dev/null
    [[ $(mark_status mode) == marking ]] || die "14c: the splitter is not marking after the writes"
    dirty=$(mark_status dirty_bytes)
    # Every write after the gap began was marked (the journal stayed full), and fio's
    # random map writes each 64 KiB block once: what the client dirtied.
    written=$((($(mark_status last_numbered) - $(mark_status gap_after)) * 65536))
    read_back=$(mark_status resynced_bytes)
    t0=$(now)
    mount -o remount,size=$((4 * GIB)) "$MARK_DIR/journal"
    for _ in $(seq 36000); do
        [[ $(mark_status mode) == active ]] && break
        sleep 0.1
    done
    resync_s=$(elapsed_since "$t0")
    [[ $(mark_status mode) == active ]] || die "14c: never active again"
    read_back=$(($(mark_status resynced_bytes) - read_back))
    map_file=$(stat -c %s "$MARK_DIR/state/bench/write-intent")
    mark_stop
    rm -f "$vol"
    umount "$MARK_DIR/journal"
    note "14c: a $(mib "$MARK_SIZE") MiB volume (disk, $(stat -f -c %T "$BENCH_DIR")): 1 GiB of random 64 KiB writes" \
        "marked $(mib "$dirty") MiB; once the journal had room the splitter was active again after ${resync_s}s" \
        "(the shipper retries a failed commit with backoff up to 250 ms: that wait is in it);" \
        "a direct-I/O read of the whole volume took ${full_s}s"
    ratio=$(calc "$resync_s / $full_s")
    row "14c leave marking, 1G dirty in $(mib "$MARK_SIZE" | cut -d. -f1)M" "${resync_s} s" "full read: ${full_s} s" \
        "$ratio" "< 0.10x of full read" "$(lt "$ratio" 0.10 && echo 1 || echo 0)"
    ratio=$(calc "$read_back / $written")
    row "14d bytes read back by the resync" "$(mib "$read_back") MiB" "dirtied: $(mib "$written") MiB" "$ratio" \
        "<= 1.20x of dirtied" "$(awk -v r="$ratio" 'BEGIN { print (r <= 1.2) }')"
    # The file holds both epochs; memory holds them and the marking map, one more.
    map_bytes=$(calc "$map_file * 3 / 2 / ($MARK_SIZE / $GIB)")
    ratio=$(calc "$map_bytes / 32768")
    row "14e map kept per GiB of volume" "$map_bytes B" "DRBD bitmap: 32768 B" "$ratio" "<= 1.00x of DRBD" \
        "$(awk -v r="$ratio" 'BEGIN { print (r <= 1) }')"
    note "14e: the write-intent file of the $(mib "$MARK_SIZE") MiB volume is $map_file bytes (two epochs, 64 KiB grains);" \
        "memory holds those and the marking map: 1.5x the file"
    local fa fm
    read -r _ fa <<< "$flush_active"
    read -r _ fm <<< "$flush_marking"
    ratio=$(calc "$fm / $fa")
    row "14f FLUSH p99 while marking" "$fm us" "journal active: $fa us" "$ratio" "<= 1.50x of active" \
        "$(awk -v r="$ratio" 'BEGIN { print (r <= 1.5) }')"
}
