# Sourced by bench.sh (its helpers, ROWS and NOTES): cascade's NBD server with
# journaling off (the nbd-serve example: a plain FileExport, tests/bench/nbd_serve.rs)
# and on (`cascade split`, every write numbered and journalled), beside nbdkit's file
# plugin and qemu-nbd, each serving the same image on 127.0.0.1 to fio's nbd engine
# (libnbd, one connection), time-based runs of $NBD_RUNTIME s after a 2 s ramp:
#
#  13a. sequential 1 MiB writes, iodepth 8      vs  nbdkit, MiB/s
#  13b. random 64 KiB writes, iodepth 16        vs  nbdkit, MiB/s
#  13c. random 4 KiB writes, iodepth 32         vs  nbdkit, IOPS
#  13d. random 4 KiB writes, iodepth 1          vs  nbdkit, IOPS
#  13e. the p99 completion latency of (d)       vs  nbdkit
#  13f-i. a-d with journaling on, the journal on the image's file system (the tmpfs)
#                                               vs  nbdkit in the same run
#  13j. the worst p99, over f-i, of the time from a write's acknowledgement to its
#       delta's durable commit (the report's shipped.commit_lag)  vs  1 s
#  13k-o. f-j with the journal on a disk: a directory under $NBD_JOURNAL_DISK
#       (default $BENCH_DIR; NBD_JOURNAL_DISK= leaves these out)
#
# Aims: at least nbdkit's throughput on a-d, a p99 in (e) at most 1.5x nbdkit's;
# journaling on (issue 12), at least 0.5x nbdkit's sequential throughput and 0.8x its
# random (64 KiB and 4 KiB), and an acknowledgement-to-commit p99 under 1 s. The notes
# give every server's MiB/s, IOPS, p99 and peak RSS (VmHWM) per workload, and per split
# run: the base's time, the commit lag (p50, p99, max), the journal's size against the
# bytes written, and the CPU time and write() bytes of its busiest threads (all are
# named tokio-rt-worker; the shipper is the one that wrote about the journal's size).
# qemu-nbd runs with its fastest honest settings: writeback cache (as the other two,
# which write through the page cache), thread-pool AIO, no discard, no zero detection.
#
# Every server is started fresh for each workload and stopped after it; the order of the
# servers turns from one workload to the next. NBD_ROUNDS (default 1) repeats all of it
# and keeps each server's best (and a split's worst commit lag). The image ($NBD_SIZE,
# 4 GiB) is fully written first, on a tmpfs mounted under $RUN (NBD_DIR=DIR puts it in
# DIR instead). bench.sh's cleanup calls nbd_cleanup: the server running (NBD_PID) is
# killed, the tmpfs unmounted and the disk journal's directory removed.
#
# Journaling on: each run starts `cascade split` on a fresh state and journal directory,
# and fio once it says its base is journalled. Without reflinks (tmpfs, ext4) that base
# is a full copy of the volume, and the writes wait until it is journalled; of a 4 GiB
# image of random data it took 39 s here (writes held all along) and 4 GiB of journal,
# and the file driver's copy of the volume 4 GiB more on the same file system: eight
# runs would spend five minutes and 8 GiB of memory on bases. So the image is zeroed
# (dd, still fully allocated) before each split run: the base still reads it all, but
# journals zero records (about 1 s, 150 KiB), and memory holds the image and one run's
# journal only.
# What is measured is the writes after the base, as a VM's disk would see them. A
# journal takes about 0.9x the bytes written (fio's buffers compress a little), at most
# ~2 GiB a run at the rates seen: the tmpfs has NBD_JOURNAL_ROOM (6 GiB) for it beside
# the image, the bench refuses to start without that much memory free, and each run's
# journal is removed after it. NBD_SPLIT_RUNTIME (default $NBD_RUNTIME) shortens the
# journaling-on runs if a faster splitter ever needs it.
#
# fio and the server share the machine's cores: on a 2-core VM one run of a server
# varies by up to a fifth from the next; NBD_ROUNDS=3 steadies the figures.

NBD_SERVE_BIN=${NBD_SERVE_BIN:-$TARGET_DIR/release/examples/nbd-serve}
NBD_SIZE=${NBD_SIZE:-$((4 * GIB))}
NBD_RUNTIME=${NBD_RUNTIME:-10}
NBD_ROUNDS=${NBD_ROUNDS:-1}
NBD_SPLIT_RUNTIME=${NBD_SPLIT_RUNTIME:-$NBD_RUNTIME}
NBD_JOURNAL_ROOM=${NBD_JOURNAL_ROOM:-$((6 * GIB))}
NBD_JOURNAL_DISK=${NBD_JOURNAL_DISK-$BENCH_DIR}
NBD_SERVERS=(cascade nbdkit qemu-nbd split)
NBD_EXPORT=bench
NBD_PID= NBD_URI= NBD_MNT= NBD_IMAGE= NBD_LOG= NBD_DISK_RUN=

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
# nbd_split_start VARIANT: `cascade split` serving $NBD_IMAGE, zeroed first (see the
# header), as $NBD_EXPORT, with its state and journal in a fresh directory beside the
# image (split) or under $NBD_JOURNAL_DISK (split-disk); in NBD_PID and NBD_URI once
# its base is journalled, the seconds that took in NBD_BASE_S.
NBD_SPLIT_DIR= NBD_BASE_S=
nbd_split_start() {
    local t0 err
    case $1 in
    split) NBD_SPLIT_DIR=$(dirname "$NBD_IMAGE")/split ;;
    split-disk) NBD_SPLIT_DIR=$NBD_DISK_RUN/split ;;
    esac
    rm -rf "$NBD_SPLIT_DIR"
    mkdir -p "$NBD_SPLIT_DIR"
    dd if=/dev/zero of="$NBD_IMAGE" bs=1M count=$((NBD_SIZE / MIB)) conv=notrunc,fsync status=none
    cat > "$NBD_SPLIT_DIR/cascade.yaml" <<YAML
state-dir: state
journal-dir: journal
consistency-groups:
  - name: bench
    splitter: { commit-every: 100ms }
    volumes:
      - { id: $NBD_EXPORT, driver: file, path: $NBD_IMAGE }
YAML
    err=$NBD_SPLIT_DIR/stderr
    for _ in 1 2 3 4 5; do
        t0=$(now)
        if split_serve "$NBD_SPLIT_DIR/cascade.yaml" "$NBD_SPLIT_DIR"; then
            NBD_BASE_S=$(elapsed_since "$t0")
            return 0
        fi
        stop_nbd
        cat "$err" >> "$NBD_LOG"
    done
    die "cascade split did not start; its log: $(tail -5 "$err")"
}

# split_serve CONFIG DIR: `cascade split` of group bench in CONFIG on a free
# 127.0.0.1 port, its report in DIR/report.json and its stderr in DIR/stderr; in
# NBD_PID and NBD_URI once it says its base is journalled. Fails if it exits first, or
# after ten minutes (the base of a 4 GiB image read in full takes seconds).
split_serve() {
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "== $BIN split --config $1 --cg bench --listen 127.0.0.1:$port --json" >> "$NBD_LOG"
    "$BIN" split --config "$1" --cg bench --listen "127.0.0.1:$port" --json > "$2/report.json" 2> "$2/stderr" &
    NBD_PID=$!
    for _ in $(seq 12000); do
        kill -0 "$NBD_PID" 2> /dev/null || return 1
        if grep -q 'journalling the writes after it' "$2/stderr"; then
            NBD_URI=nbd://127.0.0.1:$port/$NBD_EXPORT
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# nbd_split_stop BS: SIGTERM; it must exit 0 (every acknowledged write journalled) and
# report. Sets NBD_J to (lag_p50_ms lag_p99_ms lag_max_ms writes deltas journal_bytes
# base_bytes written_bytes) and NBD_CPU to its busiest threads' CPU seconds and bytes
# passed to write() (every thread is a tokio-rt-worker by name; the shipper is the
# one that wrote about the journal's size), then the rest's.
NBD_J=() NBD_CPU= NBD_BASE_BYTES=
nbd_split_stop() {
    local rc=0 jd=$NBD_SPLIT_DIR/journal r
    NBD_CPU=$(python3 - "$NBD_PID" <<'PY'
import glob, os, sys
tick = os.sysconf("SC_CLK_TCK")
threads = []
for task in glob.glob(f"/proc/{sys.argv[1]}/task/*"):
    try:
        s = open(f"{task}/stat").read()
        io = dict(l.split(": ") for l in open(f"{task}/io").read().splitlines())
    except OSError:
        continue
    f = s[s.rindex(")") + 2 :].split()
    threads.append(((int(f[11]) + int(f[12])) / tick, int(io["wchar"]) / 2**20))
threads.sort(reverse=True)
top = ", ".join(f"{c:.1f}s {w:.0f} MiB" for c, w in threads[:3])
rest = threads[3:]
print(f"{len(threads)} threads: {top}; the other {len(rest)} {sum(c for c, _ in rest):.1f}s {sum(w for _, w in rest):.0f} MiB")
PY
)
    kill -TERM "$NBD_PID"
    wait "$NBD_PID" || rc=$?
    NBD_PID=
    cat "$NBD_SPLIT_DIR/stderr" >> "$NBD_LOG"
    [[ $rc == 0 ]] || die "cascade split exited with $rc: $(tail -5 "$NBD_SPLIT_DIR/stderr")"
    r=$(python3 - "$NBD_SPLIT_DIR/report.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["shipped"]
bs = {"1M": 1 << 20, "64k": 64 << 10, "4k": 4 << 10}[sys.argv[2]]
l = r["commit_lag"]
print(l["p50_ms"], l["p99_ms"], f"{l['max_ms']:.0f}", r["writes"], r["deltas"], r["writes"] * bs)
PY
)
    read -r -a NBD_J <<< "$r"
    [[ ${#NBD_J[@]} == 6 ]] || die "cannot read cascade split's report in $NBD_SPLIT_DIR"
    NBD_J=("${NBD_J[@]:0:5}" "$(du -sb "$jd" | cut -f1)" "$NBD_BASE_BYTES" "${NBD_J[5]}")
    rm -rf "$NBD_SPLIT_DIR"
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
    if [[ -n $NBD_DISK_RUN ]]; then rm -rf "$NBD_DISK_RUN"; fi
    NBD_MNT= NBD_DISK_RUN=
    return 0
}

# nbd_fio SERVER NAME RW BS DEPTH: one fio run against a fresh SERVER; sets NBD_R to
# (MiB/s IOPS p99_us rss_kib). Not run in a subshell, so cleanup knows NBD_PID.
# For cascade split, also NBD_J and NBD_CPU (nbd_split_stop).
NBD_R=()
nbd_fio() {
    local out=$RUN/nbd/$2-$1.json hwm runtime=$NBD_RUNTIME avail
    case $1 in
    split*)
        runtime=$NBD_SPLIT_RUNTIME
        nbd_split_start "$1"
        NBD_BASE_BYTES=$(du -sb "$NBD_SPLIT_DIR/journal" | cut -f1)
        ;;
    *) nbd_start "$1" ;;
    esac
    fio --name="$2" --ioengine=nbd --uri="$NBD_URI" --rw="$3" --bs="$4" --iodepth="$5" \
        --norandommap --time_based --runtime="$runtime" --ramp_time=2 \
        --output-format=json --output="$out" > /dev/null 2>> "$NBD_LOG" ||
        die "fio $2 against $1 failed: $(tail -5 "$NBD_LOG")"
    hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$NBD_PID/status")
    case $1 in
    split*)
        # A journal that filled its file system makes the writers wait: not a figure.
        avail=$(df --output=avail -B1 "$NBD_SPLIT_DIR" | tail -1)
        [[ $avail -gt $((64 * MIB)) ]] ||
            die "the journal of $1 filled $(df --output=target "$NBD_SPLIT_DIR" | tail -1):" \
                "give it more room (NBD_JOURNAL_ROOM) or a shorter run (NBD_SPLIT_RUNTIME)"
        nbd_split_stop "$4"
        ;;
    *) stop_nbd ;;
    esac
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
    echo "[13] NBD server, journaling off and on, vs nbdkit and qemu-nbd (fio, nbd engine)" >&2
    local t
    for t in fio nbdkit qemu-nbd nbdinfo; do
        command -v "$t" > /dev/null || die "missing $t (make deps installs it)"
    done
    [[ -x $NBD_SERVE_BIN ]] || die "missing $NBD_SERVE_BIN (make bench builds the nbd-serve example)"
    mkdir -p "$RUN/nbd"
    NBD_LOG=$RUN/nbd/servers.log
    local -a servers=("${NBD_SERVERS[@]}")
    local dir=${NBD_DIR:-} where avail fs disk_fs=
    if [[ -n $NBD_JOURNAL_DISK ]]; then
        mkdir -p "$NBD_JOURNAL_DISK"
        NBD_DISK_RUN=$(mktemp -d "$NBD_JOURNAL_DISK/cascade-bench-journal.XXXXXX")
        servers+=(split-disk) disk_fs=$(stat -f -c %T "$NBD_DISK_RUN")
    fi
    local n=${#servers[@]}
    if [[ -z $dir ]]; then
        # The tmpfs holds the image and one split run's journal at a time (memory: the
        # room is only a cap, a journal uses what it holds and is removed after its run).
        avail=$(($(awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo) * 1024))
        [[ $avail -gt $((NBD_SIZE + NBD_JOURNAL_ROOM + 2 * GIB)) ]] ||
            die "$(mib "$avail") MiB of memory available: not enough for a $(mib "$NBD_SIZE") MiB image" \
                "and $(mib "$NBD_JOURNAL_ROOM") MiB of journal on a tmpfs; set NBD_JOURNAL_ROOM, NBD_SIZE or NBD_DIR"
        dir=$RUN/nbd/tmpfs NBD_MNT=$dir
        mkdir -p "$dir"
        mount -t tmpfs -o size=$((NBD_SIZE + 64 * MIB + NBD_JOURNAL_ROOM)) tmpfs "$dir"
    fi
    NBD_IMAGE=$dir/nbd.img
    fs=$(stat -f -c %T "$dir") where="$fs ($dir)"
    dd if=/dev/zero of="$NBD_IMAGE" bs=1M count=$((NBD_SIZE / MIB)) conv=fsync status=none
    note "13: a $(mib "$NBD_SIZE") MiB image, fully written, on $where; fio $(fio --version)" \
        "(nbd engine, 1 connection), ${NBD_RUNTIME}s after a 2 s ramp, a fresh server per run," \
        "best of $NBD_ROUNDS round(s); p99 = completion latency; RSS = the server's VmHWM"
    note "13: nbdkit $(nbdkit --version | awk '{ print $2 }') file plugin," \
        "$(qemu-nbd --version | head -1) --cache=writeback --aio=threads; cascade: nbd-serve"
    note "13f-: journaling on = cascade split (commit-every 100ms), ${NBD_SPLIT_RUNTIME}s after a 2 s ramp;" \
        "split: state and journal on the image's file system, $where$(
            [[ -n $NBD_JOURNAL_DISK ]] && echo "; split-disk: on $disk_fs ($NBD_DISK_RUN)")"
    note "13f-: the image is zeroed before each split run, so the base (read in full: no reflinks here)" \
        "journals as zero records and not $(mib "$NBD_SIZE") MiB of data; the rows measure the writes after it"

    # id name rw bs depth
    local -a loads=("a seq-1M-qd8 write 1M 8" "b rand-64K-qd16 randwrite 64k 16"
        "c rand-4K-qd32 randwrite 4k 32" "d rand-4K-qd1 randwrite 4k 1")
    local -A bw iops p99 rss lag
    local -a runs=()
    local l id name rw bs depth round i s k r j
    for round in $(seq "$NBD_ROUNDS"); do
        i=0
        for l in "${loads[@]}"; do
            read -r id name rw bs depth <<< "$l"
            for k in $(seq 0 $((n - 1))); do
                s=${servers[$(((i + k + round - 1) % n))]}
                echo "  $name: $s (round $round)" >&2
                nbd_fio "$s" "$name" "$rw" "$bs" "$depth"
                r=("${NBD_R[@]}")
                if [[ -z ${bw[$id$s]:-} ]] || lt "${bw[$id$s]}" "${r[0]}"; then
                    bw[$id$s]=${r[0]} iops[$id$s]=${r[1]}
                fi
                if [[ -z ${p99[$id$s]:-} ]] || lt "${r[2]}" "${p99[$id$s]}"; then p99[$id$s]=${r[2]}; fi
                if [[ -z ${rss[$id$s]:-} ]] || lt "${rss[$id$s]}" "${r[3]}"; then rss[$id$s]=${r[3]}; fi
                if [[ $s == split* ]]; then
                    j=("${NBD_J[@]}")
                    # The worst round's lag: the aim is a bound.
                    if [[ -z ${lag[$id$s]:-} ]] || lt "${lag[$id$s]}" "${j[1]}"; then lag[$id$s]=${j[1]}; fi
                    t=$(printf '13%s %-14s %-10s round %s: base %ss (%s KiB of journal);' "$id" "$name" "$s" \
                        "$round" "$NBD_BASE_S" "$(calc "${j[6]} / 1024")")
                    t+=" ack->commit p50 ${j[0]} p99 ${j[1]} max ${j[2]} ms; ${j[3]} writes in ${j[4]} deltas;"
                    t+=" journal after the base $(mib $((j[5] - j[6]))) MiB for $(mib "${j[7]}") MiB written"
                    t+=" ($(calc "(${j[5]} - ${j[6]}) / ${j[7]}")x); RSS $(calc "${r[3]} / 1024") MiB;"
                    runs+=("$t CPU (s) and write() bytes of its $NBD_CPU")
                fi
            done
            i=$((i + 1))
        done
    done
    rm -f "$NBD_IMAGE"
    nbd_cleanup

    local unit ours peer ratio off
    for l in "${loads[@]}"; do
        read -r id name rw bs depth <<< "$l"
        for s in "${servers[@]}"; do
            note "$(printf '13%s %-14s %-10s %9s MiB/s %8s IOPS  p99 %9s us  RSS %7s MiB' "$id" "$name" "$s" \
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
    for r in "${runs[@]}"; do note "$r"; done
    ours=${p99[dcascade]} peer=${p99[dnbdkit]}
    ratio=$(calc "$ours / $peer")
    row "13e nbd rand-4K-qd1 p99 latency" "$ours us" "nbdkit: $peer (qemu-nbd ${p99[dqemu-nbd]})" "$ratio" \
        "<= 1.50x of nbdkit" "$(awk -v r="$ratio" 'BEGIN { print (r <= 1.5) }')"

    # Journaling on: f-i (and k-n on disk) the throughput of a-d, j (o) the worst p99
    # of the time from acknowledgement to durable commit.
    local letters=fghijklmno at=0 aim label worst worst_name
    for s in "${servers[@]}"; do
        [[ $s == split* ]] || continue
        label="journal $fs"
        [[ $s == split-disk ]] && label="journal $disk_fs"
        worst=0 worst_name=
        for l in "${loads[@]}"; do
            read -r id name rw bs depth <<< "$l"
            if [[ $bs == 4k ]]; then
                unit=IOPS ours=${iops[$id$s]} peer=${iops[${id}nbdkit]} off=${iops[${id}cascade]}
            else
                unit=MiB/s ours=${bw[$id$s]} peer=${bw[${id}nbdkit]} off=${bw[${id}cascade]}
            fi
            aim=0.80
            [[ $rw == write ]] && aim=0.50
            ratio=$(calc "$ours / $peer")
            row "13${letters:at:1} $name $label" "$ours $unit" "nbdkit: $peer (nbd-serve $off)" "$ratio" \
                ">= ${aim}x of nbdkit" "$(ge "$ratio" "$aim" && echo 1 || echo 0)"
            at=$((at + 1))
            if lt "$worst" "${lag[$id$s]}"; then worst=${lag[$id$s]} worst_name=$name; fi
        done
        ratio=$(calc "$worst / 1000")
        row "13${letters:at:1} ack->commit p99 $label" "$worst ms ($worst_name)" "limit: 1000 ms" "$ratio" \
            "< 1.00x of limit" "$(lt "$worst" 1000 && echo 1 || echo 0)"
        at=$((at + 1))
    done
}
