# Sourced by bench.sh (its helpers, ROWS and NOTES): an encrypted object replica
# (docs/encryption.md) next to the same replica unencrypted, on one 1 GiB image-file
# volume of incompressible data, both in local-directory targets on this disk.
#
#  17a. export of the full 1 GiB delta, `encryption:` on      vs  off
#  17b. restore of the volume into a new file, with the key    vs  from the plain replica
#
# Scratch space: about 4 GiB at peak under $RUN.

sealed_setup() {
    echo "[17] setup: 1 GiB volume, full cycle, a plain and an encrypted directory target" >&2
    local d=$RUN/sealed j
    mkdir -p "$d/targets"
    cat > "$d/cascade.yaml" <<'EOF'
state-dir: state
journal-dir: journals
targets-dir: targets
consistency-groups:
  - name: bench
    targets: [plain, sealed]
    volumes:
      - { id: vol, driver: file, path: vol.img }
EOF
    printf 'kind: object\nurl: %s\n' "$d/plain" > "$d/targets/plain.yaml"
    printf 'kind: object\nurl: %s\nencryption:\n  key-file: %s\n' "$d/sealed" "$d/vault.key" > "$d/targets/sealed.yaml"
    "$BIN" key generate "$d/vault.key" > /dev/null
    write_random "$d/vol.img" "$GIB"
    SEALED_SHA=$(sha "$d/vol.img")
    j=$(cycle "$d")
    note "17: first (full) cycle: $(phases "$j"), stored $(mib "$(json stored_bytes <<< "$j")") MiB"
    SEALED_DIR=$d
}

# 17a. Each round exports the whole delta again to each target (its directory removed
#      first), the two taking turns; best of 5 each.
bench_sealed_export() {
    echo "[17a] export of a 1 GiB delta, encrypted vs plain" >&2
    local d=$SEALED_DIR segs plain="" sealed="" t target round
    segs=("$d"/journals/bench/seg-*.cjs)
    for round in 1 2 3 4 5; do
        for target in plain sealed; do
            rm -rf "${d:?}/$target"
            warm "${segs[@]}"
            sync
            timed t export_to "$d" "$target"
            [[ $(json status.cursor <<< "$t_out") == 1 ]] || die "export to $target did not reach delta 1: $t_out"
            if [[ $target == plain ]]; then plain=$(min "${plain:-$t}" "$t"); else sealed=$(min "${sealed:-$t}" "$t"); fi
            note "17a: round $round: $target ${t}s, $(mib "$(du_b "$d/$target")") MiB stored"
        done
    done
    note "17a: both read and check every record of the delta, then write it as one object and the manifest" \
        "(fsynced); encrypted: sealed in 1 MiB AES-256-GCM frames as it streams; warm page cache; best of 5"
    local ratio
    ratio=$(calc "$plain / $sealed")
    row "17a export 1024 MiB, encrypted" "$(mbps "$GIB" "$sealed") MiB/s (${sealed}s)" \
        "plain: $(mbps "$GIB" "$plain") MiB/s (${plain}s)" "$ratio" ">= 0.90x of plain" \
        "$(ge "$ratio" 0.9 && echo 1 || echo 0)"
}

# 17b. Restore into a new file from each replica, taking turns; best of 5 each; the image
#      must be the volume, byte for byte.
bench_sealed_restore() {
    echo "[17b] restore of 1 GiB, encrypted vs plain" >&2
    local d=$SEALED_DIR out=$RUN/sealed/restored.img plain="" sealed="" t target round
    for round in 1 2 3 4 5; do
        for target in plain sealed; do
            rm -f "$out"
            sync
            if [[ $target == plain ]]; then
                timed t "$BIN" restore --from "$d/plain" --to "vol=$out" --json
                plain=$(min "${plain:-$t}" "$t")
            else
                timed t "$BIN" restore --from "$d/sealed" --to "vol=$out" --key-file "$d/vault.key" --json
                sealed=$(min "${sealed:-$t}" "$t")
            fi
            [[ $(sha "$out") == "$SEALED_SHA" ]] || die "the image restored from $target differs from the volume"
            note "17b: round $round: $target ${t}s"
        done
    done
    rm -f "$out"
    note "17b: into a new file (streamed: ranged reads, each record checked and written, fsync);" \
        "encrypted: each 4 MiB read is opened frame by frame as it arrives; sha256 checked; best of 5"
    local ratio
    ratio=$(calc "$plain / $sealed")
    row "17b restore 1024 MiB, encrypted" "$(mbps "$GIB" "$sealed") MiB/s (${sealed}s)" \
        "plain: $(mbps "$GIB" "$plain") MiB/s (${plain}s)" "$ratio" ">= 0.90x of plain" \
        "$(ge "$ratio" 0.9 && echo 1 || echo 0)"
}

bench_sealed() {
    sealed_setup
    bench_sealed_export
    bench_sealed_restore
    rm -rf "$RUN/sealed"
}
