# Sourced by bench.sh: the lvm-thin driver, inside the VM the LVM tests use (TCG
# emulation: KVM fails here, so absolute times are slow; both sides of each ratio run
# in the same VM, on data in guest memory).
#
#   9. bytes read by an incremental lvm-thin cycle, 1% of 64 KiB blocks changed  vs  the
#      bytes changed (the metadata diff reads nothing else)
#  9b. the external commands that cycle runs (lvm2, thin_delta)  vs  the aim of 5
#  10. that cycle's time                                     vs  the file driver's full-scan
#      cycle on the same 1 GiB data and the same change

bench_lvm() {
    echo "[9-10] lvm-thin in the VM: 1 GiB volume, 1% changed" >&2
    local d=$RUN/lvm out lvm file n
    mkdir -p "$d"
    write_random "$d/data.bin" "$GIB"
    n=$((GIB / BLOCK / 100))
    write_random "$d/change.bin" $((n * BLOCK))
    python3 -c "import random; r = random.Random(9); print('\n'.join(f'{i}:{b}' for i, b in enumerate(r.sample(range($GIB // $BLOCK), $n))))" > "$d/blocks.txt"
    out=$("$ROOT/tests/vm/run.sh" --memory 8G --rwdir "$d" -- bash "$ROOT/tests/bench/lvm-guest.sh" "$d" "$BIN") ||
        die "the lvm bench failed in the VM: $out"
    lvm=$(sed -n 's/^lvm //p' <<< "$out") file=$(sed -n 's/^file //p' <<< "$out")
    [[ -n $lvm && -n $file ]] || die "the lvm bench printed no cycle reports: $out"
    local read changed lt ft ratio
    read=$(json volumes.0.read_bytes <<< "$lvm") changed=$(json volumes.0.changed_bytes <<< "$lvm")
    note "9: $n blocks changed ($(mib $((n * BLOCK))) MiB written); lvm-thin cycle: $(phases "$lvm"), changed $(mib "$changed") MiB, read $(mib "$read") MiB"
    note "10: file driver (copy path, image on tmpfs): $(phases "$file"), read $(mib "$(json volumes.0.read_bytes <<< "$file")") MiB of changes after comparing 2048 MiB"
    local cmds ncmd
    cmds=$(sed -n 's/^commands //p' <<< "$out") ncmd=${cmds%% *}
    [[ $ncmd =~ ^[0-9]+$ ]] || die "the lvm bench printed no command count: $out"
    note "9-10: under TCG every process start costs 0.1-0.3 s (root over 9p); the incremental lvm-thin cycle ran $ncmd commands: ${cmds#* }"
    row "9b lvm-thin incr. commands" "$ncmd commands" "aim: 5" "$(calc "$ncmd / 5")" "<= 1.00x of aim" \
        "$(ge 5 "$ncmd" && echo 1 || echo 0)"
    ratio=$(calc "$read / ($n * $BLOCK)")
    row "9 lvm-thin incr. read 1%" "$(mib "$read") MiB read" "changed: $(mib $((n * BLOCK))) MiB" "$ratio" \
        "<= 1.10x of changed" "$(ge 1.10 "$ratio" && echo 1 || echo 0)"
    lt=$(json total_ms <<< "$lvm") ft=$(json total_ms <<< "$file")
    ratio=$(calc "$lt / $ft")
    row "10 lvm-thin incr. cycle 1%" "${lt} ms" "file full-scan: ${ft} ms" "$ratio" "< 0.10x of full scan" \
        "$(ge 0.10 "$ratio" && echo 1 || echo 0)"
    rm -rf "$d"
}
