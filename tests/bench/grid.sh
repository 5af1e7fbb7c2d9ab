# Sourced by bench.sh (its helpers, ROWS and NOTES): a grid (issue 15), streams served
# by `cascade split` processes sharing a counter in s3s-fs.
#
#  16a. grid bookmark latency p50/p99 across 3 and 10 streams (the grid-bench example,
#       in the library: value, hold, mark in every journal, marks in the store)
#                                      vs  the round trip of one conditional put to the
#                                          same store, measured between the bookmarks
#  16b. client write latency p99 (fio's nbd engine, 4 KiB random writes, one at a time,
#       to one stream of 3) while a bookmark is taken every second
#                                      vs  the same workload with no bookmarks
#
# Aims (issue 15): 16a p99 under 3x, 16b under 1.5x.

GRID_PIDS=()
grid_cleanup() {
    local p
    for p in "${GRID_PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
    for p in "${GRID_PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
    GRID_PIDS=()
}

# grid_streams DIR N: N split streams s0..s(N-1) of grid `bench`, counter in s3s-fs,
# grid listeners on 127.0.0.1:17700+i, NBD on 127.0.0.1:17800+i; returns once all
# serve.
grid_streams() {
    local d=$1 n=$2 i j peers
    head -c 32 /dev/urandom | base64 > "$d/secret"
    chmod 600 "$d/secret"
    for ((i = 0; i < n; i++)); do
        peers=
        for ((j = 0; j < n; j++)); do
            [[ $j == "$i" ]] || peers+="${peers:+, }\"127.0.0.1:$((17700 + j))\""
        done
        mkdir -p "$d/s$i"
        truncate -s 256M "$d/s$i/v.img"
        cat > "$d/s$i/cascade.yaml" <<EOF
state-dir: state
journal-dir: journals
grid:
  name: bench
  stream: s$i
  counter: s3://bench/grid-$n
  endpoint: $S3_ENDPOINT
  allow-http: true
  listen: 127.0.0.1:$((17700 + i))
  peers: [$peers]
  secret-file: ../secret
consistency-groups:
  - name: vms
    splitter:
      listen: 127.0.0.1:$((17800 + i))
    volumes:
      - { id: v, driver: file, path: v.img }
EOF
        (cd "$d/s$i" && exec "$BIN" split -c cascade.yaml --cg vms > split.out 2> split.err) &
        GRID_PIDS+=($!)
    done
    for ((i = 0; i < n; i++)); do
        for _ in $(seq 200); do
            grep -q "takes bookmarks" "$d/s$i/split.err" 2> /dev/null && break
            sleep 0.05
        done
        grep -q "takes bookmarks" "$d/s$i/split.err" || die "stream s$i of $n did not start: $(cat "$d/s$i/split.err")"
    done
}

# grid_fio URI SECONDS: fio's 4 KiB random-write completion latency p99, in ms.
grid_fio() {
    fio --name=grid --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --iodepth=1 --size=256M \
        --time_based --runtime="$2" --output-format=json 2> /dev/null |
        python3 -c '
import json, sys
out = sys.stdin.read()
j = json.loads(out[out.index("{"):])  # fio says "connected to NBD server" first
print("%.3f" % (j["jobs"][0]["write"]["clat_ns"]["percentile"]["99.000000"] / 1e6))'
}

bench_grid() {
    local d=$RUN/grid n j p50 p99 put ratio none with bg
    local gb=$TARGET_DIR/release/examples/grid-bench
    [[ -x $gb ]] || (cd "$ROOT" && cargo build --release --example grid-bench) || die "cannot build grid-bench"
    command -v fio > /dev/null || die "missing fio"
    export AWS_ACCESS_KEY_ID="AKGRID$RANDOM$RANDOM" AWS_SECRET_ACCESS_KEY="grid-secret-$RANDOM$RANDOM$RANDOM"
    mkdir -p "$RUN/s3grid/bench"
    start_s3 "$RUN/s3grid"
    for n in 3 10; do
        rm -rf "$d" && mkdir -p "$d"
        grid_streams "$d" "$n"
        "$gb" "$d/s0/cascade.yaml" 10 "warm" > /dev/null
        j=$("$gb" "$d/s0/cascade.yaml" 200 "b" 5)
        p50=$(json p50_ms <<< "$j") p99=$(json p99_ms <<< "$j") put=$(json put_p50_ms <<< "$j")
        ratio=$(calc "$p99 / $put")
        row "16a bookmark p99, $n streams" "$p99 ms (p50 $p50)" "one conditional put: $put ms" "$ratio" "< 3x" \
            "$(lt "$ratio" 3 && echo 1 || echo 0)"
        note "16a: $n streams: $(json complete <<< "$j") of 200 complete; writes held p99 $(json hold_p99_ms <<< "$j") ms; put p99 $(json put_p99_ms <<< "$j") ms"
        if [[ $n == 3 ]]; then
            none=$(grid_fio nbd://127.0.0.1:17800/v 20)
            "$gb" "$d/s0/cascade.yaml" 20 "every-second" 1000 > "$d/bookmarks.json" &
            bg=$!
            with=$(grid_fio nbd://127.0.0.1:17800/v 20)
            wait "$bg"
            ratio=$(calc "$with / $none")
            row "16b write p99, bookmark every 1s" "$with ms" "no bookmarks: $none ms" "$ratio" "< 1.5x" \
                "$(lt "$ratio" 1.5 && echo 1 || echo 0)"
            note "16b: bookmarks meanwhile: $(cat "$d/bookmarks.json")"
        fi
        grid_cleanup
    done
    stop_s3
    rm -rf "$d"
}
