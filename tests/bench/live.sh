# Sourced by bench.sh (its helpers, ROWS and NOTES): a live block replica (issue 14),
# an image file kept current by the block exporter with an undo journal beside it.
#
#  15a. `cascade rewind` of a 1% change on a 1 GiB replica   vs  a full restore of that
#       volume from the journal (`cascade replay` onto a fresh file), time
#  15b. apply throughput with undo (a delta of 10% of the blocks, first written since
#       the replica's full image: every undo byte read from the replica)
#                                                             vs  the same delta to a plain
#       block target; and the replica reads a delta of overwrites saved (its undo refers
#       to the held entry that wrote the bytes, instead of reading them)
#  15c. time to first byte of `cascade serve --at` (spawn to a 4 KiB read answered by
#       qemu-io) on a 1 GiB replica and a 16 GiB sparse one   vs  the aim, 1 s
#
# Aims (issue 14): 15a under 0.05x, 15b at least 0.5x, 15c under 1 s for both.

LIVE_DIR=

# live_group DIR SIZE: a one-volume group `bench` on DIR/vol.img (SIZE bytes, not written)
# with two block targets: `live` (DIR/live.img, undo in DIR/undo) and `plain`
# (DIR/plain.img).
live_group() {
    mkdir -p "$1/cascade-targets"
    cat > "$1/cascade.yaml" <<'EOF'
state-dir: state
journal-dir: journals
consistency-groups:
  - name: bench
    targets: [live, plain]
    volumes:
      - { id: vol, driver: file, path: vol.img }
EOF
    printf 'kind: block\nvolumes: { vol: ../live.img }\nundo: { dir: ../undo, max-bytes: 8GiB }\n' \
        > "$1/cascade-targets/live.yaml"
    printf 'kind: block\nvolumes: { vol: ../plain.img }\n' > "$1/cascade-targets/plain.yaml"
    truncate -s "$2" "$1/vol.img" "$1/live.img" "$1/plain.img"
}
live_export() { "$BIN" export --config "$1/cascade.yaml" --target "$2" --json; }

# overwrite_half FILE PERCENT SEED NEWSEED: new random data over half the blocks that
# `change_blocks FILE PERCENT SEED` picked.
overwrite_half() {
    python3 - "$1" "$2" "$3" "$4" "$BLOCK" <<'EOF'
import os, random, sys
path, pct, seed, new, block = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
nblocks = os.path.getsize(path) // block
picked = random.Random(seed).sample(range(nblocks), round(nblocks * pct / 100))
rng = random.Random(new)
with open(path, "r+b") as f:
    for b in picked[: len(picked) // 2]:
        f.seek(b * block)
        f.write(rng.randbytes(block))
    f.flush()
    os.fsync(f.fileno())
EOF
}

# serve_ttfb DIR POINT: seconds from spawning `cascade serve --at POINT` to the first
# 4 KiB read it answers.
serve_ttfb() {
    local log=$1/serve.log t0 pid uri="" s
    t0=$(now)
    "$BIN" serve --config "$1/cascade.yaml" --target live --at "$2" --listen 127.0.0.1:0 2> "$log" &
    pid=$!
    for _ in $(seq 400); do
        kill -0 "$pid" 2> /dev/null || die "cascade serve exited: $(cat "$log")"
        [[ -z $uri ]] && uri=$(sed -n 's/.* at \(nbd:[^ ]*\)$/\1/p' "$log" | head -1)
        if [[ -n $uri ]] && qemu-io -f raw -c 'read 0 4k' "$uri" > /dev/null 2>&1; then
            s=$(elapsed_since "$t0")
            kill "$pid" && wait "$pid"
            echo "$s"
            return 0
        fi
        sleep 0.005
    done
    kill "$pid"
    die "cascade serve answered no read: $(cat "$log")"
}

bench_live() {
    echo "[15] live replica: rewind, apply with undo, serve --at" >&2
    local d=$RUN/live j p l ratio
    LIVE_DIR=$d
    live_group "$d" "$GIB"
    write_random "$d/vol.img" "$GIB"
    "$BIN" cycle --config "$d/cascade.yaml" --cg bench --json > /dev/null
    live_export "$d" plain > /dev/null
    live_export "$d" live > /dev/null

    # 15b: a delta of first writes, then one of overwrites of half of them.
    change_blocks "$d/vol.img" 10 21 > /dev/null
    "$BIN" cycle --config "$d/cascade.yaml" --cg bench --json > /dev/null
    warm "$d/plain.img" "$d/live.img"
    sync
    timed p_s live_export "$d" plain
    timed l_s live_export "$d" live
    l=$l_s_out
    note "15b: delta 2 ($(mib "$(json bytes <<< "$l")") MiB of journal): plain ${p_s}s, live ${l_s}s;" \
        "undo read $(mib "$(json live.made.read_bytes <<< "$l")") MiB of the replica," \
        "stored $(mib "$(json live.made.stored_bytes <<< "$l")") MiB"
    ratio=$(calc "$p_s / $l_s")
    row "15b apply with undo (10%, 1 GiB)" "${l_s}s" "no undo: ${p_s}s" "$ratio" ">= 0.50x (throughput)" \
        "$(ge "$ratio" 0.5 && echo 1 || echo 0)"
    overwrite_half "$d/vol.img" 10 21 22
    "$BIN" cycle --config "$d/cascade.yaml" --cg bench --json > /dev/null
    sync
    timed p3_s live_export "$d" plain
    timed l3_s live_export "$d" live
    l=$l3_s_out
    note "15b: delta 3 (overwrites of half of delta 2's blocks): plain ${p3_s}s, live ${l3_s}s" \
        "($(calc "$p3_s / $l3_s")x); its undo covers $(mib "$(json live.made.undo_bytes <<< "$l")") MiB," \
        "read $(mib "$(json live.made.read_bytes <<< "$l")") MiB of the replica, referred" \
        "$(mib "$(json live.made.referred_bytes <<< "$l")") MiB to delta 2's redo: the reads the retirement saves"

    # 15a: a 1% change, then back before it.
    change_blocks "$d/vol.img" 1 23 > /dev/null
    "$BIN" cycle --config "$d/cascade.yaml" --cg bench --json > /dev/null
    live_export "$d" live > /dev/null
    sync
    timed rw_s "$BIN" rewind --config "$d/cascade.yaml" --target live --to 3 --json
    note "15a: rewind 4 -> 3: $(json bytes <<< "$rw_s_out") bytes written; window" \
        "$(json window.oldest <<< "$rw_s_out")..$(json window.newest <<< "$rw_s_out")," \
        "$(mib "$(json window.bytes <<< "$rw_s_out")") MiB of undo"
    rm -f "$RUN/restore.img"
    sync
    timed rs_s "$BIN" replay "$d/journals/bench" --until 3 --to "vol=$RUN/restore.img" --json
    cmp -s "$RUN/restore.img" "$d/live.img" || die "the rewound replica differs from the replay to 3"
    rm -f "$RUN/restore.img"
    ratio=$(calc "$rw_s / $rs_s")
    row "15a rewind 1% of 1 GiB" "${rw_s}s" "full restore: ${rs_s}s" "$ratio" "< 0.05x of restore" \
        "$(lt "$ratio" 0.05 && echo 1 || echo 0)"
    timed fw_s "$BIN" rewind --config "$d/cascade.yaml" --target live --latest --json
    cmp -s "$d/vol.img" "$d/live.img" || die "rolled forward, the replica differs from the volume"
    note "15a: roll forward 3 -> 4: ${fw_s}s"

    # 15c: time to first byte, 1 GiB (from point 1: three entries undone) and 16 GiB sparse.
    local t1 t16 s=$RUN/live16
    t1=$(serve_ttfb "$d" 1)
    live_group "$s" $((16 * GIB))
    for off in 1 5000 9000 15000; do
        write_random "$RUN/chunk" $((16 * MIB))
        dd if="$RUN/chunk" of="$s/vol.img" bs=1M seek="$off" conv=notrunc status=none
    done
    "$BIN" cycle --config "$s/cascade.yaml" --cg bench --json > /dev/null
    live_export "$s" live > /dev/null
    change_blocks "$s/vol.img" 0.1 24 > /dev/null
    "$BIN" cycle --config "$s/cascade.yaml" --cg bench --json > /dev/null
    live_export "$s" live > /dev/null
    t16=$(serve_ttfb "$s" 1)
    note "15c: serve --at 1: 1 GiB replica ${t1}s, 16 GiB sparse replica ${t16}s (spawn to a 4 KiB read)"
    row "15c serve --at, first byte, 1 GiB" "${t1}s" "aim: 1 s" "$(calc "$t1 / 1")" "< 1.00x of 1 s" \
        "$(lt "$t1" 1 && echo 1 || echo 0)"
    row "15c serve --at, first byte, 16 GiB" "${t16}s" "aim: 1 s" "$(calc "$t16 / 1")" "< 1.00x of 1 s" \
        "$(lt "$t16" 1 && echo 1 || echo 0)"
    rm -rf "$d" "$s" "$RUN/chunk"
}
