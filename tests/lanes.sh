#!/usr/bin/env bash
# Runs the tests in two lanes side by side, one per core: the VM tests take most of
# the time, and a TCG guest given one vCPU (CASCADE_VM_CPUS=1, tests/vm/run.sh) runs
# them about as fast as one given two, so two guests at once halve the wait. Lane A
# holds the two longest VM tests; lane B the other VM tests and every host test.
# Each lane's lines are prefixed with its name; the exit status is lane A's failure,
# else lane B's. Run from the repository root, after `cargo test --no-run`.
set -uo pipefail
CARGO=${CARGO:-cargo}
lane_a=(power_cut nbd_kernel)
lane_b=()
for f in tests/*.rs; do
    name=$(basename "$f" .rs)
    [[ " ${lane_a[*]} " == *" $name "* ]] || lane_b+=("$name")
done
args() { for t in "$@"; do printf -- '--test\n%s\n' "$t"; done; }
export CASCADE_VM_CPUS=${CASCADE_VM_CPUS:-1}
mapfile -t a < <(args "${lane_a[@]}")
mapfile -t b < <(args "${lane_b[@]}")
"$CARGO" test "${a[@]}" 2>&1 | sed -u 's/^/[A] /' &
pid_a=$!
"$CARGO" test --lib --bins --examples "${b[@]}" 2>&1 | sed -u 's/^/[B] /' &
pid_b=$!
wait "$pid_a"; rc_a=$?
wait "$pid_b"; rc_b=$?
echo "lanes: A (${lane_a[*]}) exit $rc_a; B (the rest) exit $rc_b"
[ "$rc_a" = 0 ] || exit "$rc_a"
exit "$rc_b"
