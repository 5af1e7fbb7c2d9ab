# Sourced by bench.sh (its helpers, ROWS and NOTES): three measurements of the object
# replica, on one 1 GiB image-file volume of incompressible data.
#
#   6. export of the full 1 GiB delta to S3 (s3s-fs on 127.0.0.1)  vs  a plain
#      object_store multipart upload of the same bytes (tests/bench/multipart_put.rs)
#   7. restore of that volume from S3                              vs  dd of as many bytes, fsynced
#      (b) the same from the local-directory target
#   8. cycle + export after 1% of the 64 KiB blocks changed        vs  restic backup of the image
#      (a) in time, (b) in bytes the increment adds to the store; both stores are local
#      directories on the same file system
#
# Scratch space: about 7 GiB at peak under $RUN. The S3 server is killed by bench.sh's
# cleanup (S3_PID).

S3S_FS=${S3S_FS:-${CASCADE_TOOLS:-/var/cache/cascade-tools}/bin/s3s-fs}
PUT_BIN=${MULTIPART_PUT_BIN:-$TARGET_DIR/release/examples/multipart-put}
S3_PID= S3_ENDPOINT= S3_LOG=
S3_BUCKET=bench
EXP_REGION=us-east-1

# start_s3 ROOT: s3s-fs on a free 127.0.0.1 port serving ROOT (bucket = directory);
# returns once it accepts connections. Credentials from AWS_ACCESS_KEY_ID/SECRET.
start_s3() {
    local port
    S3_LOG=$RUN/s3s-fs.log
    for _ in 1 2 3 4 5; do
        # A free port: bind :0 and let go; another process may take it first, so retry.
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        RUST_LOG=warn "$S3S_FS" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
            --secret-key "$AWS_SECRET_ACCESS_KEY" "$1" >> "$S3_LOG" 2>&1 &
        S3_PID=$!
        for _ in $(seq 100); do
            kill -0 "$S3_PID" 2> /dev/null || break
            if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
                S3_ENDPOINT=http://127.0.0.1:$port
                return 0
            fi
            sleep 0.05
        done
        kill "$S3_PID" 2> /dev/null || true
        wait "$S3_PID" 2> /dev/null || true
        S3_PID=
    done
    die "s3s-fs did not start; its log: $(tail -5 "$S3_LOG")"
}
stop_s3() {
    if [[ -n $S3_PID ]]; then
        kill "$S3_PID" 2> /dev/null || true
        wait "$S3_PID" 2> /dev/null || true # 143: killed by our TERM
        S3_PID=
    fi
    return 0
}

# export_to DIR TARGET: one `cascade export` of that target, its JSON line; dies with
# cascade's own report when the export fails.
export_to() {
    local out
    out=$("$BIN" export --config "$1/cascade.yaml" --target "$2" --json) || die "export to $2 failed: $out"
    echo "$out"
}
# restore_s3 PREFIX OUT: `cascade restore` of volume vol from the S3 prefix into OUT.
restore_s3() {
    local out
    out=$("$BIN" restore --from "s3://$S3_BUCKET/$1" --to "vol=$2" --endpoint "$S3_ENDPOINT" \
        --region "$EXP_REGION" --allow-http --work-dir "$RUN/exp/restore-work" --json) ||
        die "restore from s3://$S3_BUCKET/$1 failed: $out"
    echo "$out"
}
# limit_client ARG...: the multipart-put example against the S3 server.
limit_client() {
    AWS_ENDPOINT_URL=$S3_ENDPOINT AWS_ALLOW_HTTP=true AWS_REGION=$EXP_REGION "$PUT_BIN" --bucket "$S3_BUCKET" "$@"
}
# put_limit KEY FILE...: upload of FILE... as KEY, leaving out each segment's header.
put_limit() { limit_client --key "$1" --skip 32 "${@:2}"; }
# get_limit KEY: download of KEY, bytes discarded.
get_limit() { limit_client --key "$1" --get; }
# restic_backup FILE: one backup; its JSON summary line.
restic_backup() {
    restic backup --json "$1" > "$RUN/restic.json" || die "restic backup failed: $(tail -3 "$RUN/restic.json")"
    grep '"message_type":"summary"' "$RUN/restic.json"
}
# s3_cpu: CPU seconds (user + system) the S3 server has used so far.
s3_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$S3_PID/stat"; }
du_b() { du -sb "$1" | cut -f1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# The volume, its full delta, and the targets: S3 for 6 and 7, a directory for 8.
exp_setup() {
    echo "[6-8] setup: 1 GiB volume, full cycle, S3 server" >&2
    local d=$RUN/exp j
    mkdir -p "$d/targets" "$d/restore-work" "$RUN/s3/$S3_BUCKET"
    export AWS_ACCESS_KEY_ID="AKBENCH$RANDOM$RANDOM" AWS_SECRET_ACCESS_KEY="bench-secret-$RANDOM$RANDOM$RANDOM"
    start_s3 "$RUN/s3"
    cat > "$d/cascade.yaml" <<'EOF'
state-dir: state
journal-dir: journals
targets-dir: targets
consistency-groups:
  - name: bench
    targets: [s3, vault]
    volumes:
      - { id: vol, driver: file, path: vol.img }
EOF
    cat > "$d/targets/s3.yaml" <<EOF
kind: object
url: s3://$S3_BUCKET/cascade
endpoint: $S3_ENDPOINT
allow-http: true
region: $EXP_REGION
EOF
    cat > "$d/targets/vault.yaml" <<EOF
kind: object
url: $d/vault
EOF
    write_random "$d/vol.img" "$GIB"
    EXP_SHA=$(sha "$d/vol.img")
    j=$(cycle "$d")
    note "6-8: first (full) cycle: $(phases "$j"), stored $(mib "$(json stored_bytes <<< "$j")") MiB"
    EXP_DIR=$d
}

# 6. Export of the full delta to S3 vs the same bytes through object_store alone, same
#    part size and concurrency. The two take turns, two rounds, best of each; the
#    target's objects are removed before each round so every export uploads it all.
bench_export_s3() {
    echo "[6] export of a 1 GiB delta to S3 vs object_store multipart upload" >&2
    local d=$EXP_DIR segs best="" lim_best="" bytes lim_bytes t c0 cpu msg round
    segs=("$d"/journals/bench/seg-*.cjs)
    for round in 1 2; do
        rm -rf "$RUN/s3/$S3_BUCKET/cascade" "$RUN/s3/$S3_BUCKET/limit"
        warm "${segs[@]}"
        sync
        c0=$(s3_cpu)
        timed t export_to "$d" s3
        cpu=$(calc "$(s3_cpu) - $c0")
        bytes=$(json status.bytes <<< "$t_out")
        [[ $(json status.cursor <<< "$t_out") == 1 ]] || die "export did not reach delta 1: $t_out"
        best=$(min "${best:-$t}" "$t")
        msg="6: round $round: cascade ${t}s (s3s-fs busy ${cpu} CPU-s meanwhile)"
        sync
        c0=$(s3_cpu)
        timed t put_limit limit/delta.bin "${segs[@]}"
        lim_bytes=$(json bytes <<< "$t_out")
        note "$msg, limit ${t}s (s3s-fs busy $(calc "$(s3_cpu) - $c0") CPU-s)"
        lim_best=$(min "${lim_best:-$t}" "$t")
        sync
    done
    [[ $bytes == "$lim_bytes" ]] || die "cascade uploaded $bytes bytes, the limit $lim_bytes"
    note "6: limit = object_store WriteMultipart alone (tests/bench/multipart_put.rs) to the same server, another key"
    note "6: both upload the delta's $(mib "$bytes") MiB of journal records as one object, 16 MiB parts," \
        "4 in flight (cascade's tuned defaults, the limit uses the same); warm page cache; best of 2"
    note "6: cascade's time also covers reading and checking every record of the delta before" \
        "the upload, the manifest, and process start; the limit's only process start and the upload"
    local ours peer ratio
    ours=$(mbps "$bytes" "$best") peer=$(mbps "$bytes" "$lim_best")
    ratio=$(calc "$lim_best / $best")
    row "6 export $(mib "$bytes") MiB delta -> S3" "$ours MiB/s (${best}s)" "limit: $peer MiB/s (${lim_best}s)" \
        "$ratio" ">= 0.80x of limit" "$(ge "$ratio" 0.8 && echo 1 || echo 0)"
    rm -rf "$RUN/s3/$S3_BUCKET/limit"
}

# 7. Restore of the volume from S3 (download into a scratch journal, replay, fsync) vs
#    dd writing as many bytes with a final fsync. Turns, two rounds, best of each; the
#    restored image must be the volume, byte for byte.
bench_restore_s3() {
    echo "[7] restore of 1 GiB from S3 vs dd" >&2
    local out=$RUN/exp/restored.img dd_out=$RUN/exp/dd.img best="" dd_best="" get_best="" bytes count report t c0 key
    # What the server alone needs to serve the object: no restore can download it faster.
    key=cascade/$(json deltas.0.key < "$RUN/s3/$S3_BUCKET/cascade/manifest.json")
    for _ in 1 2; do
        c0=$(s3_cpu)
        timed t get_limit "$key"
        note "7: object_store GET of the delta object (bytes discarded) ${t}s, s3s-fs busy $(calc "$(s3_cpu) - $c0") CPU-s"
        get_best=$(min "${get_best:-$t}" "$t")
    done
    for _ in 1 2; do
        rm -f "$out" "$dd_out"
        sync
        c0=$(s3_cpu)
        timed t restore_s3 cascade "$out"
        note "7: restore ${t}s, s3s-fs busy $(calc "$(s3_cpu) - $c0") CPU-s meanwhile"
        report=$t_out
        best=$(min "${best:-$t}" "$t")
        [[ $(sha "$out") == "$EXP_SHA" ]] || die "restored image differs from the volume (sha256)"
        bytes=$(json data_bytes <<< "$report")
        count=$(((bytes + MIB - 1) / MIB))
        rm -f "$out"
        sync
        timed t dd if=/dev/zero of="$dd_out" bs=1M count="$count" conv=fsync status=none
        dd_best=$(min "${dd_best:-$t}" "$t")
        rm -f "$dd_out"
        sync
    done
    note "7: restore: $report"
    note "7: restore into a new file streams: ranged GETs (4 MiB, 4 in flight) overlap with checking and" \
        "writing each record, then fsync; sha256 of the restored image checked equal to the volume's; best of 2"
    local ours peer ratio
    ours=$(mbps "$bytes" "$best") peer=$(mbps $((count * MIB)) "$dd_best")
    ratio=$(calc "$ours / $peer")
    row "7 restore $(mib "$bytes") MiB <- S3" "$ours MiB/s (${best}s)" "dd: $peer MiB/s (${dd_best}s)" "$ratio" \
        ">= 0.70x of dd" "$(ge "$ratio" 0.7 && echo 1 || echo 0)"
    note "7: the server alone serves the object in ${get_best}s at best: no download from it can beat" \
        "$(calc "$dd_best / $get_best")x of dd here; restore took $(calc "$best / $get_best")x that time"
}

# 7b. The same restore from the local-directory object target (the embedded default),
#     where the store is not the bottleneck, vs dd.
bench_restore_dir() {
    echo "[7b] restore of 1 GiB from a directory target vs dd" >&2
    local d=$EXP_DIR out=$RUN/exp/restored.img dd_out=$RUN/exp/dd.img best="" dd_best="" t
    export_to "$d" vault > /dev/null
    for _ in 1 2; do
        rm -f "$out" "$dd_out"
        sync
        timed t "$BIN" restore --from "$d/vault" --to "vol=$out" --json
        best=$(min "${best:-$t}" "$t")
        [[ $(sha "$out") == "$EXP_SHA" ]] || die "restored image differs from the volume (sha256)"
        rm -f "$out"
        sync
        timed t dd if=/dev/zero of="$dd_out" bs=1M count=1024 conv=fsync status=none
        dd_best=$(min "${dd_best:-$t}" "$t")
        rm -f "$dd_out"
        sync
    done
    note "7b: the directory target is on the same disk as the restored file; warm page cache; best of 2"
    local ratio
    ratio=$(calc "$dd_best / $best")
    row "7b restore 1024 MiB <- directory" "$(mbps "$GIB" "$best") MiB/s (${best}s)" \
        "dd: $(mbps "$GIB" "$dd_best") MiB/s (${dd_best}s)" "$ratio" ">= 0.70x of dd" \
        "$(ge "$ratio" 0.7 && echo 1 || echo 0)"
}

# 8. An increment after 1% of the blocks changed: cascade cycle + export to a directory
#    target vs restic backup into a local repository, both on this disk, warm cache.
#    Two rounds (a fresh 1% each), best time of each; bytes are the growth of the
#    store per round, averaged.
bench_export_incremental() {
    echo "[8] incremental export, 1% changed, vs restic backup" >&2
    local d=$EXP_DIR j s n snap t0 cyc_s exp_s tot_s rs_s
    local best="" exp_best="" rs_best="" ours_b=0 restic_b=0 before round
    export RESTIC_REPOSITORY=$RUN/restic RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$RUN/restic-cache
    # Untimed baselines: the full delta in the directory target, the original image in restic.
    export_to "$d" vault > /dev/null
    restic init -q > /dev/null
    s=$(restic_backup "$d/vol.img")
    note "8: baseline: directory target $(mib "$(du_b "$d/vault")") MiB; restic repository" \
        "$(mib "$(du_b "$RUN/restic")") MiB after its first backup (data_added $(mib "$(json data_added <<< "$s")") MiB)"
    for round in 1 2; do
        n=$(change_blocks "$d/vol.img" 1 $((10 + round)))
        snap=$(ls -d "$d"/state/bench/snapshots/*/vol.img)
        warm "$d/vol.img" "$snap"
        sync
        before=$(du_b "$d/vault")
        t0=$(now)
        timed cyc_s cycle "$d"
        timed exp_s export_to "$d" vault
        tot_s=$(elapsed_since "$t0")
        j=$exp_s_out
        ours_b=$((ours_b + $(du_b "$d/vault") - before))
        note "8: round $round: $n blocks changed; cycle ${cyc_s}s ($(phases "$cyc_s_out"))," \
            "stored $(mib "$(json stored_bytes <<< "$cyc_s_out")") MiB; export ${exp_s}s, $(mib "$(json status.bytes <<< "$j")") MiB"
        best=$(min "${best:-$tot_s}" "$tot_s") exp_best=$(min "${exp_best:-$exp_s}" "$exp_s")

        warm "$d/vol.img"
        sync
        before=$(du_b "$RUN/restic")
        timed rs_s restic_backup "$d/vol.img"
        restic_b=$((restic_b + $(du_b "$RUN/restic") - before))
        note "8: round $round: restic backup ${rs_s}s, data_added $(mib "$(json data_added <<< "$rs_s_out")") MiB," \
            "repository +$(mib $(($(du_b "$RUN/restic") - before))) MiB"
        rs_best=$(min "${rs_best:-$rs_s}" "$rs_s")
    done
    note "8: both stores are local directories on the same disk (cascade: an object target \`url: DIR\`;" \
        "restic: a local repository, format 2, default compression); warm page cache for both"
    note "8: bytes = growth of the store's directory (du -sb) per increment, mean of 2 rounds;" \
        "restic chunks by content (about 1 MiB chunks), so a changed 64 KiB block costs one or two whole chunks"
    local ratio ours peer
    ratio=$(calc "$rs_best / $best")
    row "8a incr. cycle+export 1%" "${best}s (export ${exp_best}s)" "restic backup: ${rs_best}s" "$ratio" \
        ">= 3.00x (restic / ours)" "$(ge "$ratio" 3 && echo 1 || echo 0)"
    ours=$(mib $((ours_b / 2))) peer=$(mib $((restic_b / 2)))
    ratio=$(calc "$restic_b / $ours_b")
    row "8b incr. bytes stored 1%" "+$ours MiB" "restic: +$peer MiB" "$ratio" "> 1.00x (restic / ours)" \
        "$(lt "$ours_b" "$restic_b" && echo 1 || echo 0)"
}

bench_export() {
    for t in restic sha256sum du; do
        command -v "$t" > /dev/null || die "missing $t (make bench installs it)"
    done
    [[ -x $S3S_FS ]] || die "missing s3s-fs at $S3S_FS (make s3s-fs installs it)"
    [[ -x $PUT_BIN ]] || (cd "$ROOT" && cargo build --release --example multipart-put) ||
        die "cannot build the multipart-put example"
    exp_setup
    bench_export_s3
    bench_restore_s3
    bench_restore_dir
    bench_export_incremental
    stop_s3
    rm -rf "$RUN/exp" "$RUN/s3" "$RUN/restic" "$RUN/restic-cache"
}
