# Shared by the server benches (sourced, not run): start examples/server on
# an ephemeral port and stop it, each bounded in time, so a server that
# fails to start or to drain ends the run with its log instead of hanging.

# With SPLIT=1 the server runs on the first half of the CPUs this shell
# may use and the client on the rest (`taskset`), as a load generator on
# a machine of its own would: neither side then waits for a CPU behind
# the other. (On a VM they are vCPUs, which may share a physical core;
# loopback's softirq work still runs on the sender's CPU.) $server_cpus
# and $client_cpus are the `taskset` lists (empty: no pinning),
# $server_cores and $client_cores how many CPUs each side has.
# (Halves of the list, not of the cores: where hyperthread siblings are
# numbered n and n + N/2, as Linux usually numbers them, the two sides
# share physical cores.)
export LC_ALL=C # `time` prints a decimal point the parsers read
command -v python3 >/dev/null || { echo "python3 not found"; exit 1; }
# The CPUs this process may run on (a cpuset need not start at 0).
# (No affinity call, as on macOS: every CPU the machine counts.)
read -r -a allowed < <(python3 -c 'import os
cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count())
print(*sorted(cpus))')
cores=${#allowed[@]}
server_cpus= client_cpus= server_cores=$cores client_cores=$cores
if [ "${SPLIT:-0}" = 1 ]; then
    [ "$cores" -ge 2 ] || { echo "SPLIT=1 needs 2 CPUs or more"; exit 1; }
    command -v taskset >/dev/null || { echo "SPLIT=1 needs taskset (util-linux)"; exit 1; }
    server_cores=$((cores / 2)) client_cores=$((cores - cores / 2))
    server_cpus=$(IFS=,; echo "${allowed[*]:0:server_cores}")
    client_cpus=$(IFS=,; echo "${allowed[*]:server_cores}")
fi

# Command prefixes that pin to those lists (empty without SPLIT=1). A
# prefix, not a function: `taskset` execs the command, so `$!` after
# `"${on_server_cpus[@]}" cmd &` is the command's own pid.
on_server_cpus=() on_client_cpus=()
[ -z "$server_cpus" ] || on_server_cpus=(taskset -c "$server_cpus")
[ -z "$client_cpus" ] || on_client_cpus=(taskset -c "$client_cpus")

# Where cargo puts what it builds (`CARGO_TARGET_DIR` or a configured
# target directory included).
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

# A server a failed run left behind (a script's EXIT trap calls it).
leftover_server() {
    if [ -n "${server:-}" ] && kill -0 "$server" 2>/dev/null; then
        kill -KILL "$server" 2>/dev/null || true
    fi
}

# Starts the release `examples/server` with backend $1 and hashing
# rounds $2 (2 workers, port 0); sets $server (pid), $port and $log.
# Fails if the server exits, or has not said it listens within 30 s.
start_server() {
    log=$(mktemp)
    "${on_server_cpus[@]}" "$target_dir/release/examples/server" --port 0 --workers 2 --rounds "$2" --backend "$1" >"$log" 2>&1 &
    server=$!
    local waited=0
    until grep -q listening "$log"; do
        if ! kill -0 "$server" 2>/dev/null || [ "$waited" -ge 600 ]; then
            echo "server $1 did not start"; cat "$log"; kill "$server" 2>/dev/null || true; exit 1
        fi
        sleep 0.05
        waited=$((waited + 1))
    done
    port=$(sed -n 's/^listening on http:\/\/127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log")
}

# Stops the server with SIGINT (a graceful shutdown) and fails unless it
# drained its requests within 30 s.
stop_server() {
    kill -INT "$server"
    local waited=0
    while kill -0 "$server" 2>/dev/null && [ "$waited" -lt 600 ]; do
        sleep 0.05
        waited=$((waited + 1))
    done
    if kill -0 "$server" 2>/dev/null; then
        kill -KILL "$server"
        echo "server did not stop within 30 s"; cat "$log"; exit 1
    fi
    local status=0
    wait "$server" || status=$?
    [ "$status" = 0 ] || { echo "server exited with status $status"; cat "$log"; exit 1; }
    grep -q "drained: true" "$log" || { echo "server did not drain"; cat "$log"; exit 1; }
    rm -f "$log"
}

# The arguments after the round number $1, rotated by $1 - 1, one a line:
# the backends take turns at going first, so what drifts within a round
# (the machine is shared) does not land on the same backend every round.
in_turn() {
    local round=$1 i k
    shift
    for ((i = 0; i < $#; i++)); do
        k=$(((i + round - 1) % $# + 1))
        printf '%s\n' "${!k}"
    done
}
