#!/usr/bin/env bash
# The server load test of docs/BENCHMARKS.md: examples/server with each
# backend in turn, under the same bounded load from examples/loadgen, on
# loopback. Alternates the backends for ROUNDS rounds so drift on a noisy
# machine hits all three alike; prints one line per run.
#
#   bash benches/server_load.sh [ROUNDS] [extra loadgen flags...]
#
# Defaults: 3 rounds; 2 workers, 16 connections, 20,000 requests or 10 s,
# 256-byte bodies hashed 2,000 rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
cargo build --release --quiet --example server --example loadgen
for round in $(seq "$rounds"); do
    for backend in pool spawn-blocking mutex; do
        log=$(mktemp)
        target/release/examples/server --port 0 --workers 2 --rounds 2000 --backend "$backend" >"$log" &
        server=$!
        until grep -q listening "$log"; do sleep 0.05; done
        port=$(sed -n 's/^listening on http:\/\/127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log")
        result=$(target/release/examples/loadgen --port "$port" --connections 16 \
            --requests 20000 --seconds 10 --body-bytes 256 --rounds 2000 "$@")
        kill -INT "$server"
        wait "$server"
        grep -q "drained: true" "$log" || { echo "server $backend did not drain"; cat "$log"; exit 1; }
        printf 'round=%s backend=%-14s %s\n' "$round" "$backend" "$result"
        rm -f "$log"
    done
done
