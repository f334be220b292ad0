"""Draws the ratios of target/compare.json as a horizontal bar chart in SVG
(no plotting library needed). Bars right of the line at 1 are workloads
where this crate is faster than the baseline.

Usage: python3 benches/plot.py [target/compare.json] [docs/benchmarks.svg]
Also prints the figures as a Markdown table (for docs/BENCHMARKS.md).
"""
import json
import math
import sys
from xml.sax.saxutils import escape


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "target/compare.json"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/benchmarks.svg"
    with open(src) as f:
        rows = json.load(f)["results"]
    label_w, bar_w, row_h, top = 560, 420, 22, 40
    width, height = label_w + bar_w + 80, top + row_h * len(rows) + 40
    # Log scale, so 0.5x and 2x are equally far from the line at 1x.
    lo, hi = math.log10(0.25), math.log10(max(128.0, max(r["ratio"] for r in rows)))

    def x(ratio):
        v = min(max(math.log10(max(ratio, 1e-3)), lo), hi)
        return label_w + (v - lo) / (hi - lo) * bar_w

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="22" font-size="14" font-weight="bold">'
        "baseline time / our time (log scale; right of 1x = we are faster)</text>",
    ]
    for i, r in enumerate(rows):
        y = top + i * row_h
        label = escape(f'{r["workload"]} vs {r["baseline"]}')
        color = "#2a9d4b" if r["ratio"] >= 1 else "#d1495b"
        x0, x1 = sorted((x(1.0), x(r["ratio"])))
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{label}</text>')
        parts.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 1):.1f}" '
                     f'height="{row_h - 8}" fill="{color}"/>')
        parts.append(f'<text x="{x1 + 4 if r["ratio"] >= 1 else x0 - 4:.1f}" y="{y + 15}" '
                     f'text-anchor="{"start" if r["ratio"] >= 1 else "end"}">'
                     f'{r["ratio"]:.2f}x</text>')
    for tick in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128):
        if math.log10(tick) <= hi:
            tx = x(tick)
            stroke = "black" if tick == 1 else "#ccc"
            parts.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" '
                         f'y2="{height - 30}" stroke="{stroke}"/>')
            parts.append(f'<text x="{tx:.1f}" y="{height - 14}" text-anchor="middle">{tick}x</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")
    print(f"wrote {out}")
    print()
    print("| workload | baseline | ours ns/op | baseline ns/op | ratio |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f'| {r["workload"]} | {r["baseline"]} | {r["ours_ns"]:.1f} | '
              f'{r["baseline_ns"]:.1f} | {r["ratio"]:.2f}x |')
    with open(src) as f:
        extra = {k: v for k, v in json.load(f).items() if k != "results"}
    for k, v in extra.items():
        print(f"- {k}: {v:g}")


if __name__ == "__main__":
    main()
