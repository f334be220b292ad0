#!/usr/bin/env bash
# The server load test of docs/BENCHMARKS.md: examples/server with each
# backend in turn, under the same bounded load from examples/loadgen, on
# loopback. Alternates the backends for ROUNDS rounds so drift on a noisy
# machine hits all three alike; prints one line per run.
#
#   bash benches/server_load.sh [ROUNDS] [extra loadgen flags...]
#   SPLIT=1 bash benches/server_load.sh   # server and loadgen on their own CPUs
#
# Defaults: 3 rounds; 2 workers, 16 connections, 20,000 requests or 10 s,
# 256-byte bodies hashed 2,000 rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
source benches/server_common.sh
cargo build --release --quiet --example server --example loadgen
trap leftover_server EXIT
for round in $(seq "$rounds"); do
    for backend in $(in_turn "$round" pool spawn-blocking mutex); do
        start_server "$backend" 2000
        # loadgen exits 1 on any failed request: say so with its line and
        # the server's log, rather than end the script without a word.
        result=$("${on_client_cpus[@]}" "$target_dir/release/examples/loadgen" --port "$port" --connections 16 \
            --requests 20000 --seconds 10 --body-bytes 256 --rounds 2000 "$@") ||
            { echo "$backend: loadgen failed: $result"; cat "$log"; exit 1; }
        stop_server
        printf 'round=%s backend=%-14s %s\n' "$round" "$backend" "$result"
    done
done
