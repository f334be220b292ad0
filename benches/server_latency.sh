#!/usr/bin/env bash
# examples/server at fixed request rates, measured open loop by oha (a load
# generator this project did not write) with latency correction: a request
# is timed from when oha's rate timer releases it, before it waits for a
# free connection, so a stalled server cannot hide its queue (coordinated
# omission). The timer is tokio's, which fires once a millisecond: requests
# leave in bursts of a millisecond's worth, each timed from its burst.
#
# First each backend's peak is measured closed loop (oha, no rate limit);
# the rates are then 25%, 50%, 80% and 95% of the *slowest* backend's peak,
# the same for all three. The floor (FLOOR, default `inline`: the server
# doing the work on its I/O thread, offloading nothing) runs at each rate
# too and is left out of the slowest peak: it is what a request costs with
# no hand-off at all, so each backend's distance above it is what its
# offload costs. FLOOR= (empty) skips it. Every rate runs every backend and
# the floor in turn, for ROUNDS rounds, each round starting with the next
# one (in_turn), so drift on a noisy machine hits all alike. One line per
# run: p50 / p99 / p99.9 in microseconds, the rate achieved, and the
# shares of the cores the server and the client used. By default client
# and server share all the machine's cores, and those shares are of all
# of them; with SPLIT=1 the server runs on the first half of the CPUs and
# oha on the rest (server_common.sh), and each share is of its own side's.
#
#   bash benches/server_latency.sh [ROUNDS] [DURATION] [WORK_ROUNDS]
#   RATES="13000 26000 41000 49000" bash benches/server_latency.sh
#   SPLIT=1 bash benches/server_latency.sh
#
# With RATES set, those request rates (per second) are used instead of the
# percentages of a freshly measured peak, so that runs of two builds are
# compared at the same rates (the peak itself moves between runs).
#
# Needs oha (cargo install oha). Defaults: 3 rounds of 10 s runs, 16
# connections, 2 workers, 256-byte bodies hashed 10 rounds
# (`/digest?rounds=10`). Loopback only; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
duration=${2:-10}
work=${3:-10}
command -v oha >/dev/null || { echo "oha not found (cargo install oha)"; exit 1; }
# --output-format came with oha 1.9 (it replaced --json).
oha --help 2>/dev/null | grep -q -- --output-format ||
    { echo "oha $(oha --version 2>/dev/null) is too old: needs 1.9 or later (cargo install oha)"; exit 1; }
# start_server and stop_server (and the checks on the CPUs, before a build).
source benches/server_common.sh
cargo build --release --quiet --example server
body=$(mktemp) err=$(mktemp)
trap 'leftover_server; rm -f "$body" "$err"' EXIT
head -c 256 /dev/zero | tr '\0' x >"$body"

# The server's CPU time so far, in clock ticks (user + system).
ticks() {
    awk '{print $14 + $15}' "/proc/$server/stat"
}

# oha against the running server for $duration s; extra flags in "$@".
# Prints the JSON summary's fields we use, then the client's CPU seconds.
load() {
    local out cpu
    out=$(mktemp)
    # oha's own stderr to a file: only `time`'s line is parsed.
    cpu=$( { TIMEFORMAT='%U %S'; time "${on_client_cpus[@]}" oha -z "${duration}s" -c 16 --no-tui --output-format json \
        -m POST -D "$body" "$@" "http://127.0.0.1:$port/digest?rounds=$work" >"$out" 2>"$err"; } 2>&1 ) ||
        { echo "oha failed: $(cat "$err")" >&2; exit 1; }
    python3 - "$out" "$cpu" "$duration" "$client_cores" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
user, system = map(float, sys.argv[2].split())
duration, cores = float(sys.argv[3]), int(sys.argv[4])
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
# Requests still in flight when the run's time is up are cut off by oha
# ("aborted due to deadline"): not the server's failure.
errors = {e: n for e, n in d.get("errorDistribution", {}).items() if "deadline" not in e}
bad = sum(n for c, n in codes.items() if c != "200") + sum(errors.values())
us = lambda k: (p.get(k) or 0) * 1e6
print(f"{s['requestsPerSec']:.0f} {us('p50'):.0f} {us('p99'):.0f} {us('p99.9'):.0f} "
      f"{100 * (user + system) / (duration * cores):.0f} {bad}")
PY
    rm -f "$out"
}

read -r -a backends <<<"${BACKENDS:-pool spawn-blocking mutex}"
floor=${FLOOR-inline}
slowest=
for backend in "${backends[@]}" $floor; do
    start_server "$backend" "$work"
    read -r rps _ _ _ client bad < <(load)
    stop_server
    [ "$bad" = 0 ] || { echo "$backend: $bad failed requests at peak"; exit 1; }
    printf 'peak backend=%-14s requests/s=%s client_cpu=%s%%\n' "$backend" "$rps" "$client"
    [ "$backend" = "$floor" ] && continue
    if [ -z "$slowest" ] || [ "$rps" -lt "$slowest" ]; then slowest=$rps; fi
done
echo "slowest peak: $slowest requests/s"

pcts=()
if [ -n "${RATES:-}" ]; then
    read -r -a rates <<<"$RATES"
else
    rates=() pcts=(25 50 80 95)
    for pct in "${pcts[@]}"; do rates+=($((slowest * pct / 100))); done
fi
for round in $(seq "$rounds"); do
    for i in "${!rates[@]}"; do
        rate=${rates[$i]}
        # The share asked for (a rate from RATES: its share of this run's
        # slowest peak, rounded).
        pct=${pcts[$i]:-$(((200 * rate / slowest + 1) / 2))}
        for backend in $(in_turn "$round" "${backends[@]}" $floor); do
            start_server "$backend" "$work"
            before=$(ticks)
            read -r rps p50 p99 p999 client bad < <(load -q "$rate" --latency-correction)
            used=$(( $(ticks) - before ))
            stop_server
            # The server's share of its cores while it was driven.
            srv=$(( 100 * used / ($(getconf CLK_TCK) * duration * server_cores) ))
            [ "$bad" = 0 ] || { echo "$backend: $bad failed requests"; exit 1; }
            # Fell behind the rate: oha drops the requests its timer
            # released but no connection sent by the end, uncounted, so the
            # percentiles would read low. Flagged on the line (a backend
            # that cannot keep a rate is a result, not an error).
            behind=
            python3 -c "import sys; sys.exit(float('$rps') >= 0.97 * $rate)" && behind=" BEHIND_RATE"
            printf 'round=%s rate=%s%% (%s/s) backend=%-14s achieved=%s p50_us=%s p99_us=%s p99.9_us=%s server_cpu=%s%% client_cpu=%s%%%s\n' \
                "$round" "$pct" "$rate" "$backend" "$rps" "$p50" "$p99" "$p999" "$srv" "$client" "$behind"
        done
    done
done
