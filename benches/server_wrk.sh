#!/usr/bin/env bash
# examples/server under wrk, a load generator this project did not write:
# an outside check of the figures benches/server_load.sh gets from our own
# loadgen. Each backend in turn, alternating for ROUNDS rounds, on loopback,
# with a bounded run (DURATION seconds, 16 connections, one wrk thread).
# wrk cannot check answers (loadgen does); every non-2xx answer it counts
# is printed, and the run fails if there is one. After the three backends
# each round runs the floor (FLOOR, default `inline`: the work done on the
# I/O thread, no offload; FLOOR= skips it), what the server answers when
# no request pays a hand-off.
#
#   bash benches/server_wrk.sh [ROUNDS] [WORK_ROUNDS] [DURATION]
#   SPLIT=1 bash benches/server_wrk.sh   # server and wrk on their own CPUs
#
# Needs wrk (Debian: apt-get install wrk). Defaults: 3 rounds, 20 rounds of
# hashing per 256-byte body (the light-work row), 5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
work=${2:-20}
duration=${3:-5}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)"; exit 1; }
source benches/server_common.sh
cargo build --release --quiet --example server
script=$(mktemp --suffix=.lua)
trap 'leftover_server; rm -f "$script"' EXIT
cat >"$script" <<LUA
wrk.method = "POST"
wrk.body = string.rep("x", 256)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
for round in $(seq "$rounds"); do
    for backend in $(in_turn "$round" pool spawn-blocking mutex ${FLOOR-inline}); do
        start_server "$backend" "$work"
        out=$("${on_client_cpus[@]}" wrk -t1 -c16 -d"${duration}s" --latency -s "$script" \
            "http://127.0.0.1:$port/digest?rounds=$work")
        stop_server
        # A failed request, or a socket error (a refused connection, a
        # timeout), fails the run: its requests/s would not be the server's.
        if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
            echo "$backend: $(grep -E 'Non-2xx|Socket errors' <<<"$out")"
            exit 1
        fi
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        printf 'round=%s backend=%-14s requests/s=%s p50=%s p99=%s\n' "$round" "$backend" "$rps" "$p50" "$p99"
    done
done
