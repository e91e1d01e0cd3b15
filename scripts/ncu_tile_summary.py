#!/usr/bin/env python3
"""Summarise an Nsight Compute `--csv` sweep of GEMV tiles (`scripts/device/bench.sh ncu`).

`ttq bench kernels --tokens 1 --reps 1 --batch 1 --no-device-timing --gemv-tiles T1,T2,...`
launches the GEMV four times for the default tile (three warm-up calls, one timed call) and
five times per listed tile (one checking call first), shape after shape. This groups the
profiled launches in that order and prints one row per (shape, tile) with the median kernel
duration and the launch's resources (and warp instructions where the sweep collected
`smsp__inst_executed.sum`). Sweeps taken with device timing on launch more often: pass
`--default-launches` and `--tile-launches` to match.

    python3 scripts/ncu_tile_summary.py ncu_tiles.txt \
        --shapes 4096x4096,2048x8192,4096x14336,14336x4096 --tiles default,tma:4:8:1:2:2
"""

import argparse
import csv
import io
import statistics
import sys



def launches(path):
    """Metric dictionaries of the profiled launches, in launch order."""
    text = open(path, encoding="utf-8", errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        sys.exit(f"{path}: no ncu CSV header found")
    rows = csv.DictReader(io.StringIO(text[start:]))
    by_id = {}
    for row in rows:
        if not row.get("ID", "").isdigit():
            continue
        entry = by_id.setdefault(int(row["ID"]), {"kernel": row.get("Kernel Name", "")})
        entry[row["Metric Name"]] = (row["Metric Value"], row["Metric Unit"])
    return [by_id[k] for k in sorted(by_id)]


def number(value):
    return float(value.replace(",", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv_file")
    ap.add_argument("--shapes", required=True, help="comma-separated, in bench order")
    ap.add_argument("--tiles", required=True, help="comma-separated, 'default' first")
    ap.add_argument("--default-launches", type=int, default=4,
                    help="launches of the default tile (4 with --no-device-timing)")
    ap.add_argument("--tile-launches", type=int, default=5,
                    help="launches per listed tile (5 with --no-device-timing)")
    args = ap.parse_args()
    shapes = args.shapes.split(",")
    tiles = args.tiles.split(",")
    found = launches(args.csv_file)
    per_shape = args.default_launches + (len(tiles) - 1) * args.tile_launches
    want = len(shapes) * per_shape
    if len(found) != want:
        sys.exit(f"{len(found)} profiled launches, expected {want} ({len(shapes)} shapes x "
                 f"({args.default_launches} for the default + {len(tiles) - 1} tiles x "
                 f"{args.tile_launches}))")
    # Warp instructions, where the sweep collected them.
    inst = "smsp__inst_executed.sum" in found[0]
    print("| shape | tile | median duration µs | grid | block | registers | warps active % | DRAM %"
          + (" | M warp instructions |" if inst else " |"))
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---:" + (" | ---: |" if inst else " |"))
    i = 0
    for shape in shapes:
        for k, tile in enumerate(tiles):
            n = args.default_launches if k == 0 else args.tile_launches
            # The checking call (the first of a listed tile's launches) is left out.
            group = found[i + n - args.default_launches:i + n]
            i += n
            dur = [number(g["gpu__time_duration.sum"][0]) for g in group]
            unit = group[0]["gpu__time_duration.sum"][1]
            scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3,
                     "msecond": 1e3}[unit]
            g = group[0]
            med = lambda key: statistics.median(number(x[key][0]) for x in group)
            print(f"| {shape} | {tile} | {statistics.median(dur) * scale:.1f} | "
                  f"{g['launch__grid_size'][0]} | {g['launch__block_size'][0]} | "
                  f"{g['launch__registers_per_thread'][0]} | "
                  f"{med('sm__warps_active.avg.pct_of_peak_sustained_active'):.1f} | "
                  f"{med('dram__throughput.avg.pct_of_peak_sustained_elapsed'):.1f} |"
                  + (f" {med('smsp__inst_executed.sum') / 1e6:.2f} |" if inst else ""))


if __name__ == "__main__":
    main()
