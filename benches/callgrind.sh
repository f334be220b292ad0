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
cargo bench --bench instructions --no-run >/dev/null 2>&1
bin=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
ir() {
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "$2" >/dev/null 2>&1
    grep -E '^summary:|^totals:' "$out" | head -1 | awk '{print $2}'
    rm -f "$out"
}
for w in ${WORKLOADS:-attach drain mutex_attach mutex_drain join rayon_join submit spawn floor chain chain_handle rayon_chain tree rayon_tree repoll tokio_repoll}; do
    lo=$(ir "$w" 1000)
    hi=$(ir "$w" 11000)
    echo "$w: $(( (hi - lo) / 10000 )) instructions per operation"
done
