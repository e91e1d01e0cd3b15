#!/usr/bin/env python3
"""PNG plots of a `ttq experiment` / `ttq eval` results folder (records.json).

    python3 scripts/plot_results.py results/ppl-experiments-h200/gemma3-270m/methods [more folders...]

Needs matplotlib (`python3 -m pip install matplotlib`). One figure per experiment kind:
- methods: perplexity against bits, one panel per dataset, one line per method;
- groups: perplexity against group size, one panel per bit width (first dataset);
- domain: perplexity of AWQ/GPTQ by calibration set x evaluation set, TTQ beside them;
- sensitivity: perplexity against alpha and against lambda.
Anything else: a bar chart of every record.
"""

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def family(rec):
    """A method label without bits and group, e.g. `ttq a0.25`."""
    s = rec["spec"]
    kind = s["kind"]
    if kind in ("ttq", "ttqlr"):
        name = f"{kind} a{s['alpha']:g}"
        if not math.isclose(s["lambda"], 1e-4, rel_tol=1e-5):
            name += f" l{s['lambda']:g}"
        if kind == "ttqlr":
            name += f" r{s['rank']}"
        return name
    return kind


def group_value(spec):
    return spec["group"] if spec["group"] is not None else 0


def plot_methods(records, title, out):
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    fp = {r["dataset"]: r["perplexity"] for r in records if r["spec"]["kind"] == "fp"}
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        lines = defaultdict(list)
        for r in records:
            if r["dataset"] == d and r["spec"]["kind"] != "fp" and r["mode"] != "prefix":
                lines[family(r)].append((r["spec"]["bits"], r["perplexity"]))
        for name, pts in lines.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        if d in fp:
            ax.axhline(fp[d], color="black", linestyle="--", label="fp")
        ax.set_yscale("log")
        ax.set_xlabel("bits (group 128)")
        ax.set_ylabel("perplexity")
        ax.set_title(d)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_groups(records, title, out):
    d0 = records[0]["dataset"]
    bits = sorted({r["spec"]["bits"] for r in records if r["spec"]["kind"] != "fp"})
    fig, axes = plt.subplots(1, len(bits), figsize=(5 * len(bits), 4), squeeze=False)
    for ax, b in zip(axes[0], bits):
        lines = defaultdict(list)
        cols = {}
        for r in records:
            s = r["spec"]
            if r["dataset"] == d0 and s["kind"] != "fp" and s["bits"] == b:
                g = group_value(s)
                lines[family(r)].append((g, r["perplexity"]))
                cols[g] = True
        for name, pts in lines.items():
            pts.sort(key=lambda p: (p[0] == 0, p[0]))
            xs = list(range(len(pts)))
            ax.plot(xs, [p[1] for p in pts], marker="o", label=name)
            ax.set_xticks(xs, [str(p[0]) if p[0] else "row" for p in pts])
        ax.set_yscale("log")
        ax.set_xlabel("group size")
        ax.set_ylabel("perplexity")
        ax.set_title(f"{d0}, {b} bits")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_domain(records, title, out):
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    rows = []
    for r in records:
        key = f"{r['method']}\n{(r['calibration'] or '').split(' ')[0] or r['mode']}"
        if key not in rows:
            rows.append(key)
    grid = [[math.nan] * len(datasets) for _ in rows]
    for r in records:
        key = f"{r['method']}\n{(r['calibration'] or '').split(' ')[0] or r['mode']}"
        grid[rows.index(key)][datasets.index(r["dataset"])] = math.log(r["perplexity"])
    fig, ax = plt.subplots(figsize=(2.5 * len(datasets) + 3, 0.45 * len(rows) + 1.5))
    im = ax.imshow(grid, aspect="auto", cmap="viridis_r")
    ax.set_xticks(range(len(datasets)), [d.split(" ")[0] for d in datasets])
    ax.set_yticks(range(len(rows)), [k.replace("\n", "  cal ") for k in rows], fontsize=7)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{math.exp(v):.1f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(im, ax=ax, label="ln perplexity")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_sensitivity(records, title, out):
    d0 = records[0]["dataset"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    by_bits_a = defaultdict(list)
    by_bits_l = defaultdict(list)
    rtn = {}
    for r in records:
        s = r["spec"]
        if r["dataset"] != d0:
            continue
        if s["kind"] == "rtn":
            rtn[s["bits"]] = r["perplexity"]
        if s["kind"] != "ttq":
            continue
        if math.isclose(s["lambda"], 1e-4, rel_tol=1e-5):
            by_bits_a[s["bits"]].append((s["alpha"], r["perplexity"]))
        if math.isclose(s["alpha"], 0.25, rel_tol=1e-5):
            by_bits_l[s["bits"]].append((s["lambda"], r["perplexity"]))
    for b, pts in sorted(by_bits_a.items()):
        pts.sort()
        line = a1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"TTQ w{b}")
        if b in rtn:
            a1.axhline(rtn[b], linestyle="--", color=line[0].get_color(), label=f"RTN w{b}")
    for b, pts in sorted(by_bits_l.items()):
        pts.sort()
        xs = [max(p[0], 1e-7) for p in pts]
        a2.plot(xs, [p[1] for p in pts], marker="o", label=f"TTQ w{b} (alpha 0.25)")
    a1.set_xlabel("alpha (lambda 1e-4)")
    a2.set_xlabel("lambda (0 drawn at 1e-7)")
    a2.set_xscale("log")
    for a in (a1, a2):
        a.set_yscale("log")
        a.set_ylabel(f"perplexity, {d0}")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def infer_kind(records):
    """The plot for a `ttq eval` folder, from what varies among its records: calibration
    texts, a prefix mode or scoring after a prefix -> domain; several group sizes at one bit width -> groups;
    otherwise methods (perplexity against bits)."""
    calibrations = {r["calibration"] for r in records if r["calibration"]}
    modes = {r["mode"] for r in records}
    prefixed = any(m.startswith("prefix") for m in modes) or any(r.get("score_from", 0) > 0 for r in records)
    if len(calibrations) > 1 or prefixed:
        return "domain"
    groups = {r["spec"]["group"] for r in records if r["spec"]["kind"] != "fp"}
    bits = {r["spec"]["bits"] for r in records if r["spec"]["kind"] != "fp"}
    if len(groups) > 2 and len(groups) >= len(bits):
        return "groups"
    return "methods"


def main(folders):
    for folder in map(Path, folders):
        data = json.loads((folder / "records.json").read_text())
        run, records = data["run"], data["records"]
        if not records:
            continue
        title = f"{Path(run['model']).name}: {run['experiment']} ({run['windows']}x{run['seqlen']} tokens)"
        kind = run["experiment"]
        if kind == "eval":
            kind = infer_kind(records)
        plot = {
            "methods": plot_methods,
            "groups": plot_groups,
            "domain": plot_domain,
            "sensitivity": plot_sensitivity,
        }.get(kind, plot_methods)
        out = folder / f"{kind}.png"
        plot(records, title, out)
        print(out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
