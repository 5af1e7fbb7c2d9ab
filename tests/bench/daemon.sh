# Sourced by bench.sh: the daemon, `cascade run`, on ten consistency groups of image
# files, each with a local-directory object target.
#
#  11. idle: no tick falls in the 60 s measured (hourly schedules), the targets are
#      current; CPU time and resident memory of the daemon  vs  the aims, 1% of a core
#      and 30 MiB
#  12. scheduling jitter: every group cycles every second (and exports) for 60 ticks;
#      how late each cycle starts against its cron time, p99  vs  the aim, 50 ms; a
#      Python loop sleeping to the same whole seconds at the same time shows what the
#      machine's timers give

# daemon_groups DIR CRON: ten groups g0..g9 of one 16 MiB image each, with target t0..t9.
daemon_groups() {
    local d=$1 i
    mkdir -p "$d/cascade-targets"
    {
        echo "state-dir: state"
        echo "journal-dir: journals"
        echo "consistency-groups:"
        for i in $(seq 0 9); do
            echo "  - name: g$i"
            echo "    targets: [t$i]"
            echo "    schedule: { cron: \"$2\" }"
            echo "    journal-retention: { keep-deltas: 4 }"
            echo "    volumes: [ { id: v, driver: file, path: v$i.img } ]"
        done
    } > "$d/cascade.yaml"
    for i in $(seq 0 9); do
        write_random "$d/v$i.img" $((16 * MIB))
        printf 'kind: object\nurl: ../store/t%s\nsynthetic-full-every: 0\n' "$i" > "$d/cascade-targets/t$i.yaml"
    done
}

# cpu_ticks PID: user + system clock ticks of PID so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

bench_daemon() {
    echo "[11] idle daemon, 10 groups, 60 s" >&2
    local d=$RUN/daemon i pid t0 t1 hz secs cpu rss hwm
    mkdir -p "$d"
    daemon_groups "$d" "0 * * * *"
    for i in $(seq 0 9); do "$BIN" cycle --config "$d/cascade.yaml" --cg "g$i" > /dev/null; done
    "$BIN" export --config "$d/cascade.yaml" > /dev/null
    "$BIN" run --config "$d/cascade.yaml" --log-format json 2> "$d/idle.log" &
    pid=$!
    sleep 5
    hz=$(getconf CLK_TCK)
    t0=$(cpu_ticks $pid)
    sleep 60
    t1=$(cpu_ticks $pid)
    rss=$(status_kib $pid VmRSS) hwm=$(status_kib $pid VmHWM)
    kill -TERM $pid && wait $pid || die "the idle daemon did not stop cleanly: $(tail -5 "$d/idle.log")"
    cpu=$(calc "($t1 - $t0) / $hz / 60 * 100")
    note "11: the idle daemon used $((t1 - t0)) clock ticks (1/$hz s) in 60 s; RSS $((rss / 1024)) MiB now, $((hwm / 1024)) MiB at peak; it polls each journal index every 5 s for cycles made by the CLI"
    row "11a idle daemon CPU, 10 CGs" "$cpu% of a core" "limit: 1% of a core" "$(calc "$cpu / 1")" \
        "< 1.00x" "$(lt "$cpu" 1 && echo 1 || echo 0)"
    row "11b idle daemon RSS, 10 CGs" "$(calc "$hwm / 1024") MiB peak" "limit: 30 MiB" "$(calc "$hwm / 1024 / 30")" \
        "< 1.00x" "$(lt "$hwm" $((30 * 1024)) && echo 1 || echo 0)"

    echo "[12] scheduling jitter, 10 groups cycling every second, 60 ticks" >&2
    rm -rf "$d" && mkdir -p "$d"
    daemon_groups "$d" "* * * * * *"
    "$BIN" run --config "$d/cascade.yaml" --log-format json 2> "$d/busy.log" &
    pid=$!
    python3 - > "$d/timer.txt" <<'PY' &
import time
lates = []
t = int(time.time()) + 1
for _ in range(62):
    time.sleep(max(0, t - time.time()))
    lates.append((time.time() - t) * 1000)
    t += 1
print("\n".join(f"{l:.3f}" for l in lates[2:]))
PY
    local timer=$!
    wait $timer
    kill -TERM $pid && wait $pid || die "the busy daemon did not stop cleanly: $(tail -5 "$d/busy.log")"
    local stats peer p99 n
    stats=$(python3 - "$d/busy.log" <<'PY'
import json, sys
ds = []
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    f = e.get("fields", {})
    if f.get("message") == "cycle started" and "delay_ms" in f:
        ds.append(f["delay_ms"])
ds.sort()
q = lambda p: ds[min(len(ds) - 1, int(p * len(ds)))]
print(f"{len(ds)} {q(0.5):.2f} {q(0.99):.2f} {ds[-1]:.2f}")
PY
)
    read -r n p50 p99 max <<< "$stats"
    peer=$(sort -n "$d/timer.txt" | awk '{ a[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", a[i] }')
    local failed
    failed=$(grep -c '"cycle failed"' "$d/busy.log" || true)
    note "12: $n scheduled cycle starts over 60 s (10 groups, each cycling and exporting every second, $failed failed): p50 $p50 ms, p99 $p99 ms, max $max ms late; a Python loop sleeping to the same whole seconds alongside: p99 $peer ms late"
    row "12 cycle start delay p99" "$p99 ms" "limit 50 ms (timer loop $peer ms)" "$(calc "$p99 / 50")" \
        "< 1.00x" "$(lt "$p99" 50 && echo 1 || echo 0)"
}
