#!/usr/bin/env bash
# Prints instructions per operation for one callback attach (alone, and
# with its share of the completion drain; ours and the mutex future's), one
# join with a 64-element leaf (ours and rayon's), one
# submit+complete+wait, one fire-and-forget spawn (from outside, and from
# inside a worker: ambient, with a pool handle carried, and rayon's), one
# task of a spawn tree (ours and rayon's) and one wake+re-poll (ours and
# tokio's) of a future on the pool, measured
# with callgrind: each workload runs with two operation counts and the
# difference is divided by the extra operations.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)"; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found"; exit 1; }
cargo bench --quiet --bench instructions --no-run
# The bench's executable, wherever cargo put it.
bin=$(cargo bench --quiet --bench instructions --no-run --message-format=json |
    python3 -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
# Instructions of one run of workload $1 with $2 operations; fails the
# script (it is called in a command substitution) with what went wrong.
ir() {
    local out n
    out=$(mktemp)
    if ! valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "$2" >"$out.log" 2>&1; then
        echo "callgrind failed on $1 $2:" >&2
        cat "$out.log" >&2
        rm -f "$out" "$out.log"
        return 1
    fi
    n=$(grep -E '^summary:|^totals:' "$out" | head -1 | awk '{print $2}')
    rm -f "$out" "$out.log"
    [ -n "$n" ] || { echo "no instruction count for $1 $2" >&2; return 1; }
    echo "$n"
}
for w in ${WORKLOADS:-attach drain mutex_attach mutex_drain join rayon_join submit spawn floor chain chain_handle rayon_chain tree rayon_tree repoll tokio_repoll}; do
    lo=$(ir "$w" 1000)
    hi=$(ir "$w" 11000)
    echo "$w: $(( (hi - lo) / 10000 )) instructions per operation"
done
