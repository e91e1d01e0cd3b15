#!/usr/bin/env python3
"""Summarizes an Nsight Compute source-page CSV (`ncu -i REP --page source --csv
--print-source sass`): executed warp instructions and stall samples per opcode, the
instructions with the most stall samples (with their main stall reasons) and the global
accesses with excessive L2 sectors. Used for the stall analyses in docs/kernels.md (the half2 GEMV's `long_scoreboard` share)."""
import argparse
import collections
import csv


def num(v):
    try:
        return float(v.replace(",", ""))
    except (ValueError, AttributeError):
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[1]
    recs = [dict(zip(header, r)) for r in rows[2:] if len(r) == len(header)]
    stall_cols = [c for c in header if c.startswith("stall_") and "Not Issued" not in c]
    total_exec = sum(num(r["Instructions Executed"]) for r in recs)
    total_samples = sum(num(r["Warp Stall Sampling (All Samples)"]) for r in recs)
    print(f"# {rows[0][1]}: {total_exec:,.0f} warp instructions, {total_samples:,.0f} samples")
    by_op = collections.defaultdict(lambda: [0.0, 0.0])
    for r in recs:
        op = r["Source"].split()[0] if r["Source"].split() else "?"
        if op.startswith("@"):
            op = r["Source"].split()[1]
        op = op.split(".")[0]
        by_op[op][0] += num(r["Instructions Executed"])
        by_op[op][1] += num(r["Warp Stall Sampling (All Samples)"])
    print("\n| opcode | executed % | stall samples % |\n| --- | ---: | ---: |")
    for op, (e, s) in sorted(by_op.items(), key=lambda kv: -kv[1][0]):
        if e / max(total_exec, 1) >= 0.005 or s / max(total_samples, 1) >= 0.01:
            print(f"| {op} | {100 * e / total_exec:.1f} | {100 * s / total_samples:.1f} |")
    stalls = collections.Counter()
    for r in recs:
        for c in stall_cols:
            stalls[c] += num(r[c])
    print("\nstall reasons (% of samples):",
          ", ".join(f"{c[6:]} {100 * v / total_samples:.1f}" for c, v in stalls.most_common(8)))
    print(f"\n| address | instruction | samples % | top reasons |\n| --- | --- | ---: | --- |")
    top = sorted(recs, key=lambda r: -num(r["Warp Stall Sampling (All Samples)"]))[: a.top]
    for r in top:
        reasons = sorted(((num(r[c]), c[6:]) for c in stall_cols), reverse=True)[:2]
        rs = ", ".join(f"{n} {v:.0f}" for v, n in reasons if v)
        pct = 100 * num(r["Warp Stall Sampling (All Samples)"]) / total_samples
        print(f"| {r['Address'][-5:]} | `{r['Source'].strip()}` | {pct:.1f} | {rs} |")
    exc = [r for r in recs if num(r.get("L2 Theoretical Sectors Global Excessive", "0")) > 0]
    if exc:
        print("\n| address | instruction | L2 sectors | ideal |\n| --- | --- | ---: | ---: |")
        for r in sorted(exc, key=lambda r: -num(r["L2 Theoretical Sectors Global Excessive"]))[: a.top]:
            print(f"| {r['Address'][-5:]} | `{r['Source'].strip()}` | "
                  f"{num(r['L2 Theoretical Sectors Global']):,.0f} | "
                  f"{num(r['L2 Theoretical Sectors Global Ideal']):,.0f} |")


if __name__ == "__main__":
    main()
