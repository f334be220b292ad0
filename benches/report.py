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
"""
import json
import sys


def span(values, fmt):
    lo, hi = min(values), max(values)
    if fmt(lo) == fmt(hi):
        return fmt(lo)
    return f"{fmt(lo)}-{fmt(hi)}"


def main():
    paths = sys.argv[1:]
    if not paths:
        sys.exit(__doc__)
    runs = [json.load(open(p)) for p in paths]
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
