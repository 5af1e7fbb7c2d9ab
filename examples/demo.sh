#!/usr/bin/env bash
# `make demo`: the main job on the embedded default. Two image-file volumes, a full
# cycle, changes, an incremental cycle, a bookmark, more changes, a third cycle; then
# every committed point is replayed onto fresh replica files and compared with the
# checksums the volumes had when that point was taken. Then both replicas are
# exported (the object one builds a synthetic full image, the journal is pruned to
# its retention; it is encrypted under a key made here) and restored from the object
# replica alone, which is refused without the key and scrubbed; the block replica, which
# is live, is rewound to the bookmark and rolled forward again. Last, the daemon runs
# the group on its schedule for a few seconds while the volumes change.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${CASCADE:-$top/target/release/cascade}
out=${DEMO_DIR:-$top/demo-out}
rm -rf "$out" && mkdir -p "$out" && cd "$out"
sed 's|^targets-dir: .*|targets-dir: cascade-targets|' "$top/examples/demo.yaml" > cascade.yaml
mkdir -p cascade-targets replica
cp "$top"/cascade-targets/demo-*.yaml cascade-targets/

say() { printf '\n== %s\n' "$*"; }
sums() { sha256sum system.img data.img | awk '{print $1}' | paste -sd' '; }
declare -a point_sums
block_replica_equal() {
  for v in system data; do
    if cmp -s "$v.img" "replica/$v.img"; then echo "block replica $v.img: equal to the volume"; else echo "block replica $v.img: DIFFERENT"; fail=1; fi
  done
}

say "volumes: system.img (64 MiB, 24 MiB written) and data.img (128 MiB, sparse)"
truncate -s 64M system.img
truncate -s 128M data.img
head -c 24M /dev/urandom | dd of=system.img conv=notrunc status=none
for off in 3 40 97; do head -c 2M /dev/urandom | dd of=data.img bs=1M seek=$off conv=notrunc status=none; done

say "cycle 1 (full base)"
"$bin" cycle --config cascade.yaml --cg demo
point_sums[1]=$(sums)

say "change 40 random 64 KiB blocks, zero one MiB, then cycle 2"
for i in $(seq 40); do head -c 64K /dev/urandom | dd of=system.img bs=64K seek=$((RANDOM % 384)) conv=notrunc status=none; done
dd if=/dev/zero of=data.img bs=1M seek=40 count=1 conv=notrunc status=none
"$bin" cycle --config cascade.yaml --cg demo
point_sums[2]=$(sums)
"$bin" bookmark --config cascade.yaml --cg demo --name before-upgrade

say "write 8 MiB more into data.img, then cycle 3"
head -c 8M /dev/urandom | dd of=data.img bs=1M seek=64 conv=notrunc status=none
"$bin" cycle --config cascade.yaml --cg demo
point_sums[3]=$(sums)

say "journal"
"$bin" journal ls journals/demo
"$bin" journal verify journals/demo

say "replay every point onto fresh replicas and compare"
printf '%-6s %-18s %-10s\n' POINT UNTIL RESULT
fail=0
for p in 1 before-upgrade 3; do
  case $p in before-upgrade) n=2 ;; *) n=$p ;; esac
  rm -f r-system.img r-data.img
  "$bin" replay journals/demo --to system=r-system.img data=r-data.img --until "$p" >/dev/null
  got=$(sha256sum r-system.img r-data.img | awk '{print $1}' | paste -sd' ')
  if [ "$got" = "${point_sums[$n]}" ]; then r="equal"; else r="DIFFERENT"; fail=1; fi
  printf '%-6s %-18s %-10s\n' "$n" "$p" "replica $r to the volumes at that point (sha256)"
done
say "export to the block replica (image files) and the object replica (a directory, encrypted under a new key)"
truncate -s 64M replica/system.img
truncate -s 128M replica/data.img
"$bin" key generate vault.key
"$bin" export --config cascade.yaml
"$bin" status --config cascade.yaml
block_replica_equal

say "the journal after export: retention kept the newest 2 deltas, all targets hold them"
"$bin" journal ls journals/demo

say "restore from the object replica alone: delta 1 (gone from the journal), the bookmark, the newest point (from the synthetic full)"
for p in 1 before-upgrade 3; do
  case $p in before-upgrade) n=2 ;; *) n=$p ;; esac
  rm -f o-system.img o-data.img
  "$bin" restore --from vault --key-file vault.key --to system=o-system.img data=o-data.img --until "$p" >/dev/null
  got=$(sha256sum o-system.img o-data.img | awk '{print $1}' | paste -sd' ')
  if [ "$got" = "${point_sums[$n]}" ]; then r="equal"; else r="DIFFERENT"; fail=1; fi
  printf '%-6s %-18s %-10s\n' "$n" "$p" "restored $r to the volumes at that point (sha256)"
done

say "the object replica is sealed: without the key nothing is restored; a scrub reads every object back"
if "$bin" restore --from vault --to system=x-system.img data=x-data.img 2>&1 >/dev/null | sed 's/^/  /'; then :; fi
[ ! -e x-system.img ] || { echo "restored without the key"; fail=1; }
"$bin" target verify demo-vault --config cascade.yaml --read-data || fail=1

say "the block replica is live: rewind it to the bookmark, compare, and roll it forward again"
"$bin" rewind --config cascade.yaml --target demo-replica --to before-upgrade
got=$(sha256sum replica/system.img replica/data.img | awk '{print $1}' | paste -sd' ')
if [ "$got" = "${point_sums[2]}" ]; then echo "rewound replica: equal to the volumes at before-upgrade"; else echo "rewound replica: DIFFERENT"; fail=1; fi
"$bin" status --config cascade.yaml | grep -A2 demo-replica
"$bin" rewind --config cascade.yaml --target demo-replica --latest
block_replica_equal

say "the daemon: cascade run cycles on the group's schedule (every 2 s here) and keeps both replicas current"
"$bin" run --config cascade.yaml --metrics-listen 127.0.0.1:0 2> daemon.log &
daemon=$!
sleep 1
head -c 4M /dev/urandom | dd of=data.img bs=1M seek=100 conv=notrunc status=none
echo "wrote 4 MiB into data.img while it runs; waiting for two ticks"
sleep 5
"$bin" status --config cascade.yaml
port=$(grep -o 'addr=127.0.0.1:[0-9]*' daemon.log | head -1 | cut -d: -f2)
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
echo "metrics (http://127.0.0.1:$port/metrics, excerpt):"
grep -E '^cascade_(cycles_total|export_lag_deltas|journal_last_delta)' <&3 | sed 's/^/  /'
exec 3<&-
kill -TERM "$daemon"
wait "$daemon"
echo "daemon stopped on SIGTERM; its log is daemon.log"
block_replica_equal

say "journal size on disk: $(du -sh journals/demo | cut -f1) for $(du -sh --apparent-size system.img data.img | awk '{print $1}' | paste -sd+) of volumes"
[ $fail = 0 ] && echo "demo: ok, every point replays exactly" || { echo "demo: FAILED"; exit 1; }
