# Sourced by bench.sh (its helpers, ROWS and NOTES): cascade's NBD server with
# journaling off (the nbd-serve example: a plain FileExport, tests/bench/nbd_serve.rs)
# beside nbdkit's file plugin and qemu-nbd, each serving the same image on 127.0.0.1 to
# fio's nbd engine (libnbd, one connection), time-based runs of $NBD_RUNTIME s after a
# 2 s ramp:
#
#  13a. sequential 1 MiB writes, iodepth 8      vs  nbdkit, MiB/s
#  13b. random 64 KiB writes, iodepth 16        vs  nbdkit, MiB/s
#  13c. random 4 KiB writes, iodepth 32         vs  nbdkit, IOPS
#  13d. random 4 KiB writes, iodepth 1          vs  nbdkit, IOPS
#  13e. the p99 completion latency of (d)       vs  nbdkit
#
# Aims: at least nbdkit's throughput on a-d, a p99 in (e) at most 1.5x nbdkit's. The
# notes give every server's MiB/s, IOPS, p99 and peak RSS (VmHWM) per workload.
# qemu-nbd runs with its fastest honest settings: writeback cache (as the other two,
# which write through the page cache), thread-pool AIO, no discard, no zero detection.
#
# Every server is started fresh for each workload and stopped after it; the order of the
# three turns from one workload to the next. NBD_ROUNDS (default 1) repeats all of it and
# keeps each server's best. The image ($NBD_SIZE, 4 GiB) is fully written first, on a
# tmpfs mounted under $RUN (NBD_DIR=DIR puts it in DIR instead). bench.sh's cleanup
# calls nbd_cleanup: the server running (NBD_PID) is killed and the tmpfs unmounted.
# fio and the server share the machine's cores: on a 2-core VM one run of a server
# varies by up to a fifth from the next; NBD_ROUNDS=3 steadies the figures.

NBD_SERVE_BIN=${NBD_SERVE_BIN:-$ROOT/target/release/examples/nbd-serve}
NBD_SIZE=${NBD_SIZE:-$((4 * GIB))}
NBD_RUNTIME=${NBD_RUNTIME:-10}
NBD_ROUNDS=${NBD_ROUNDS:-1}
NBD_SERVERS=(cascade nbdkit qemu-nbd)
NBD_EXPORT=bench
NBD_PID= NBD_URI= NBD_MNT= NBD_IMAGE= NBD_LOG=

# nbd_start SERVER: SERVER serving $NBD_IMAGE as $NBD_EXPORT on a free 127.0.0.1 port, in
# NBD_PID and NBD_URI; returns once an NBD client (nbdinfo) gets the export's size.
nbd_start() {
    local port uri cmd
    for _ in 1 2 3 4 5; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        uri=nbd://127.0.0.1:$port/$NBD_EXPORT
        case $1 in
        cascade) cmd=("$NBD_SERVE_BIN" --listen "127.0.0.1:$port" "$NBD_EXPORT=$NBD_IMAGE") ;;
        nbdkit) cmd=(nbdkit -f -p "$port" -i 127.0.0.1 -e "$NBD_EXPORT" file "$NBD_IMAGE") ;;
        # -t: it stays up after nbdinfo's connection ends.
        qemu-nbd) cmd=(qemu-nbd -f raw -x "$NBD_EXPORT" -p "$port" -b 127.0.0.1 -t
            --cache=writeback --aio=threads "$NBD_IMAGE") ;;
        esac
        echo "== $1: ${cmd[*]}" >> "$NBD_LOG"
        "${cmd[@]}" >> "$NBD_LOG" 2>&1 &
        NBD_PID=$!
        for _ in $(seq 100); do
            kill -0 "$NBD_PID" 2> /dev/null || break
            if nbdinfo --size "$uri" > /dev/null 2>&1; then
                NBD_URI=$uri
                return 0
            fi
            sleep 0.05
        done
        stop_nbd
    done
    die "$1 did not start; its log: $(tail -5 "$NBD_LOG")"
}
stop_nbd() {
    if [[ -n $NBD_PID ]]; then
        kill "$NBD_PID" 2> /dev/null || true
        wait "$NBD_PID" 2> /dev/null || true # 143: killed by our TERM
        NBD_PID=
    fi
    return 0
}
nbd_cleanup() {
    stop_nbd
    if [[ -n $NBD_MNT ]] && mountpoint -q "$NBD_MNT"; then umount "$NBD_MNT"; fi
    NBD_MNT=
    return 0
}

# nbd_fio SERVER NAME RW BS DEPTH: one fio run against a fresh SERVER; sets NBD_R to
# (MiB/s IOPS p99_us rss_kib). Not run in a subshell, so cleanup knows NBD_PID.
NBD_R=()
nbd_fio() {
    local out=$RUN/nbd/$2-$1.json hwm
    nbd_start "$1"
    fio --name="$2" --ioengine=nbd --uri="$NBD_URI" --rw="$3" --bs="$4" --iodepth="$5" \
        --norandommap --time_based --runtime="$NBD_RUNTIME" --ramp_time=2 \
        --output-format=json --output="$out" > /dev/null 2>> "$NBD_LOG" ||
        die "fio $2 against $1 failed: $(tail -5 "$NBD_LOG")"
    hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$NBD_PID/status")
    stop_nbd
    read -r -a NBD_R <<< "$(python3 - "$out" "$hwm" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))["jobs"][0]["write"]
p99 = w["clat_ns"]["percentile"]["99.000000"] / 1000
print(f"{w['bw_bytes'] / 2**20:.2f} {w['iops']:.0f} {p99:.1f} {sys.argv[2]}")
PY
)"
    [[ ${#NBD_R[@]} == 4 ]] || die "cannot read fio's results in $out"
}

bench_nbd() {
    echo "[13] NBD server, journaling off, vs nbdkit and qemu-nbd (fio, nbd engine)" >&2
    local t
    for t in fio nbdkit qemu-nbd nbdinfo; do
        command -v "$t" > /dev/null || die "missing $t (make deps installs it)"
    done
    [[ -x $NBD_SERVE_BIN ]] || die "missing $NBD_SERVE_BIN (make bench builds the nbd-serve example)"
    mkdir -p "$RUN/nbd"
    NBD_LOG=$RUN/nbd/servers.log
    local dir=${NBD_DIR:-} where
    if [[ -z $dir ]]; then
        dir=$RUN/nbd/tmpfs NBD_MNT=$dir
        mkdir -p "$dir"
        mount -t tmpfs -o size=$((NBD_SIZE + 64 * MIB)) tmpfs "$dir"
    fi
    NBD_IMAGE=$dir/nbd.img
    where="$(stat -f -c %T "$dir") ($dir)"
    dd if=/dev/zero of="$NBD_IMAGE" bs=1M count=$((NBD_SIZE / MIB)) conv=fsync status=none
    note "13: a $(mib "$NBD_SIZE") MiB image, fully written, on $where; fio $(fio --version)" \
        "(nbd engine, 1 connection), ${NBD_RUNTIME}s after a 2 s ramp, a fresh server per run," \
        "best of $NBD_ROUNDS round(s); p99 = completion latency; RSS = the server's VmHWM"
    note "13: nbdkit $(nbdkit --version | awk '{ print $2 }') file plugin," \
        "$(qemu-nbd --version | head -1) --cache=writeback --aio=threads; cascade: nbd-serve"

    # id name rw bs depth
    local -a loads=("a seq-1M-qd8 write 1M 8" "b rand-64K-qd16 randwrite 64k 16"
        "c rand-4K-qd32 randwrite 4k 32" "d rand-4K-qd1 randwrite 4k 1")
    local -A bw iops p99 rss
    local l id name rw bs depth round i s k r
    for round in $(seq "$NBD_ROUNDS"); do
        i=0
        for l in "${loads[@]}"; do
            read -r id name rw bs depth <<< "$l"
            for k in 0 1 2; do
                s=${NBD_SERVERS[$(((i + k + round - 1) % 3))]}
                echo "  $name: $s (round $round)" >&2
                nbd_fio "$s" "$name" "$rw" "$bs" "$depth"
                r=("${NBD_R[@]}")
                if [[ -z ${bw[$id$s]:-} ]] || lt "${bw[$id$s]}" "${r[0]}"; then
                    bw[$id$s]=${r[0]} iops[$id$s]=${r[1]}
                fi
                if [[ -z ${p99[$id$s]:-} ]] || lt "${r[2]}" "${p99[$id$s]}"; then p99[$id$s]=${r[2]}; fi
                if [[ -z ${rss[$id$s]:-} ]] || lt "${rss[$id$s]}" "${r[3]}"; then rss[$id$s]=${r[3]}; fi
            done
            i=$((i + 1))
        done
    done
    rm -f "$NBD_IMAGE"
    nbd_cleanup

    local unit ours peer ratio
    for l in "${loads[@]}"; do
        read -r id name rw bs depth <<< "$l"
        for s in "${NBD_SERVERS[@]}"; do
            note "$(printf '13%s %-14s %-8s %9s MiB/s %8s IOPS  p99 %9s us  RSS %7s MiB' "$id" "$name" "$s" \
                "${bw[$id$s]}" "${iops[$id$s]}" "${p99[$id$s]}" "$(calc "${rss[$id$s]} / 1024")")"
        done
        if [[ $bs == 4k ]]; then
            unit=IOPS ours=${iops[${id}cascade]} peer=${iops[${id}nbdkit]}
            t="qemu-nbd ${iops[${id}qemu-nbd]}"
        else
            unit=MiB/s ours=${bw[${id}cascade]} peer=${bw[${id}nbdkit]}
            t="qemu-nbd ${bw[${id}qemu-nbd]}"
        fi
        ratio=$(calc "$ours / $peer")
        row "13$id nbd $name" "$ours $unit" "nbdkit: $peer ($t)" "$ratio" ">= 1.00x of nbdkit" \
            "$(ge "$ratio" 1 && echo 1 || echo 0)"
    done
    ours=${p99[dcascade]} peer=${p99[dnbdkit]}
    ratio=$(calc "$ours / $peer")
    row "13e nbd rand-4K-qd1 p99 latency" "$ours us" "nbdkit: $peer (qemu-nbd ${p99[dqemu-nbd]})" "$ratio" \
        "<= 1.50x of nbdkit" "$(awk -v r="$ratio" 'BEGIN { print (r <= 1.5) }')"
}
