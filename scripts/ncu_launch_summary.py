#!/usr/bin/env python3
"""Summarizes an Nsight Compute `--csv --metrics ...` run by launch configuration.

Groups the profiled launches by (kernel, grid, block, registers) and prints, for each group,
the number of launches and the medians of the kernel duration, executed warp instructions
(`smsp__inst_executed.sum`, when collected) and DRAM throughput. Used for the quantizer
and statistics durations of docs/kernels.md (`ncu --csv -k regex:quantize_pack --metrics
gpu__time_duration.sum,…,smsp__inst_executed.sum ttq bench kernels --tokens 1 --reps 1
--batch 1 > ncu_quantize.txt`):

    python3 scripts/ncu_launch_summary.py ncu_quantize.txt
"""
import argparse
import collections
import csv
import io
import statistics
import sys

SCALE_US = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}


def number(value):
    return float(value.replace(",", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv_file")
    args = ap.parse_args()
    text = open(args.csv_file, encoding="utf-8", errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        sys.exit(f"{args.csv_file}: no ncu CSV header found")
    launches = {}
    for row in csv.DictReader(io.StringIO(text[start:])):
        if not row.get("ID", "").isdigit():
            continue
        entry = launches.setdefault(int(row["ID"]), {"kernel": row.get("Kernel Name", "")})
        entry[row["Metric Name"]] = (row["Metric Value"], row["Metric Unit"])
    groups = collections.OrderedDict()
    for i in sorted(launches):
        e = launches[i]
        key = tuple(e.get(k, ("?", ""))[0] for k in
                    ("launch__grid_size", "launch__block_size", "launch__registers_per_thread"))
        groups.setdefault((e["kernel"],) + key, []).append(e)
    print("| kernel | grid | block | registers | launches | median µs | warp instructions | DRAM % |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (kernel, grid, block, regs), group in groups.items():
        dur = statistics.median(
            number(g["gpu__time_duration.sum"][0]) * SCALE_US[g["gpu__time_duration.sum"][1]]
            for g in group)
        inst = ("–" if "smsp__inst_executed.sum" not in group[0] else
                f"{statistics.median(number(g['smsp__inst_executed.sum'][0]) for g in group):,.0f}")
        dram = statistics.median(
            number(g["dram__throughput.avg.pct_of_peak_sustained_elapsed"][0]) for g in group)
        print(f"| {kernel} | {grid} | {block} | {regs} | {len(group)} | {dur:.1f} | {inst} | "
              f"{dram:.1f} |")


if __name__ == "__main__":
    main()
