"""Merges the target/compare.json of several full runs of
`cargo bench --bench compare` into the table docs/BENCHMARKS.md shows:
one row per workload and baseline, each ratio as its range over the runs
(min-max) with every run's figure, and the top-level figures as ranges.

Usage:
    for i in 1 2 3; do
        cargo bench --bench compare && cp target/compare.json /tmp/run$i.json
    done
    python3 benches/report.py /tmp/run1.json /tmp/run2.json /tmp/run3.json

The ratio is baseline time / our time: above 1 means we are faster.

With --latency, reads the output of benches/server_latency.sh instead and
prints its table: per rate and backend, p50 / p99 / p99.9 and the server's
and the client's CPU as ranges over the rounds; then, per rate, which
backend had the lowest p50 and p99 in each round (the floor, `inline`, is
not counted) and how far each stood above the floor that round.

    bash benches/server_latency.sh > /tmp/lat.txt
    python3 benches/report.py --latency /tmp/lat.txt
"""
import json
import re
import sys


def span(values, fmt):
    lo, hi = min(values), max(values)
    if fmt(lo) == fmt(hi):
        return fmt(lo)
    return f"{fmt(lo)}-{fmt(hi)}"


# Backends that are references, not contenders (server_latency.sh's FLOOR).
FLOORS = {"inline"}


def latency(path):
    line_re = re.compile(
        r"rate=(\d+)% \((\d+)/s\) backend=(\S+) +achieved=(\d+) p50_us=(\d+) "
        r"p99_us=(\d+) p99.9_us=(\d+) server_cpu=(\d+)% client_cpu=(\d+)%"
    )
    keys, rows = [], {}
    for line in open(path):
        m = line_re.search(line)
        if not m:
            if line.startswith(("peak", "slowest")):
                print(line.rstrip())
            continue
        pct, rate, backend = m.group(1), int(m.group(2)), m.group(3)
        key = (rate, pct, backend)
        if key not in rows:
            keys.append(key)
            rows[key] = []
        rows[key].append([int(g) for g in m.groups()[3:]])
    if not rows:
        sys.exit(f"{path}: no rate lines (round=... rate=...) of server_latency.sh")
    n = max(len(v) for v in rows.values())
    print()
    print(f"| rate | backend | p50 µs | p99 µs | p99.9 µs | server CPU | client CPU |")
    print("|---|---|---:|---:|---:|---:|---:|")
    integer = lambda v: f"{v:,}"
    percent = lambda v: f"{v}%"
    for rate, pct, backend in keys:
        cols = list(zip(*rows[(rate, pct, backend)]))
        cells = [span(cols[i], integer) for i in (1, 2, 3)] + [span(cols[i], percent) for i in (4, 5)]
        print(f"| {pct}% ({rate:,}/s) | {backend} | " + " | ".join(cells) + " |")
    print(f"\n({n} rounds; ranges min-max)\n")
    # Which backend was best in each round, per rate: ranges hide pairing.
    # The floor (the server offloading nothing) is no contender; each
    # backend's distance above it, round by round, is its offload's cost.
    for rate in sorted({k[0] for k in keys}):
        backends = [k for k in keys if k[0] == rate and k[2] not in FLOORS]
        floors = [k for k in keys if k[0] == rate and k[2] in FLOORS]
        for col, name in ((1, "p50"), (2, "p99")):
            best = []
            for r in range(n):
                scored = [(rows[k][r][col], k[2]) for k in backends if len(rows[k]) > r]
                best.append(min(scored)[1])
            print(f"- {rate:,}/s, lowest {name} by round: {', '.join(best)}")
            for f in floors:
                above = [
                    f"{k[2]} " + "/".join(
                        f"{rows[k][r][col] - rows[f][r][col]:+d}"
                        for r in range(min(len(rows[k]), len(rows[f])))
                    )
                    for k in backends
                ]
                print(f"  {name} above the floor ({f[2]}), µs by round: {', '.join(above)}")


def main():
    paths = sys.argv[1:]
    if not paths:
        sys.exit(__doc__)
    if paths[0] == "--latency":
        if len(paths) != 2:
            sys.exit("usage: report.py --latency LOG (server_latency.sh's output)")
        return latency(paths[1])
    runs = [json.load(open(p)) for p in paths]
    quick = [p for p, run in zip(paths, runs) if run.get("quick")]
    if quick:
        sys.exit(f"{', '.join(quick)}: a --quick run; the report merges full runs only")
    # Rows in the order of the first run; a row missing from a run is shown
    # with the runs that have it, and says so.
    keys, rows = [], {}
    for run in runs:
        for r in run["results"]:
            key = (r["workload"], r["baseline"])
            if key not in rows:
                keys.append(key)
                rows[key] = []
            rows[key].append(r)
    print(f"| workload | baseline | ours ns/op | baseline ns/op | ratio, {len(runs)} runs | each run |")
    print("|---|---|---:|---:|---:|---|")
    for key in keys:
        rs = rows[key]
        ours = span([r["ours_ns"] for r in rs], lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.1f}")
        theirs = span([r["baseline_ns"] for r in rs], lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.1f}")
        ratio = span([r["ratio"] for r in rs], lambda v: f"{v:.2f}x")
        each = ", ".join(f"{r['ratio']:.2f}" for r in rs)
        missing = "" if len(rs) == len(runs) else f" ({len(rs)} of {len(runs)} runs)"
        print(f"| {key[0]} | {key[1]} | {ours} | {theirs} | {ratio}{missing} | {each} |")
    print()
    tops = [k for k in runs[0] if k != "results"]
    for k in tops:
        values = [run[k] for run in runs if k in run]
        print(f"- {k}: {span(values, lambda v: f'{v:,.3f}'.rstrip('0').rstrip('.'))}")


if __name__ == "__main__":
    main()
