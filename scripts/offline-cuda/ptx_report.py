#!/usr/bin/env python3
"""ptxas resources of every PTX module that scripts/offline-cuda/run.sh collected.

One row per module: entry point, its comptime parameters (from CubeCL's compilation log,
`cubecl.log` beside the modules, which lists compilations in the order the modules were
loaded), registers, spill stores and loads, barriers, and the static shared memory ptxas
reports (CubeCL allocates shared memory dynamically, so it is usually absent). Kernels of
Burn's own (element-wise ops, fills, casts) are left out unless --all.

    python3 scripts/offline-cuda/ptx_report.py --ptxas PTXAS offline-ptx [--all]
"""

import argparse
import pathlib
import re
import subprocess

BURN_PREFIXES = ("full_kernel", "copy_kernel", "prng_kernel", "kernel_", "unary_", "cast_",
                 "mask_", "sum_", "reduce_", "into_contiguous", "slice_", "gather_", "scatter_")


def comptime_params(log_path):
    """Per compilation in the log, its scalar comptime parameters as `name=value` text."""
    if not log_path.exists():
        return []
    blocks = log_path.read_text(errors="replace").split("[START_KERNEL_COMPILATION]")[1:]
    out = []
    for block in blocks:
        info = block.split("info:", 1)[1] if "info:" in block else ""
        fields = re.findall(r"^ {8}(\w+): (\d+|true|false),$", info, re.M)
        out.append(" ".join(f"{k}={v}" for k, v in fields))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ptx_dir")
    ap.add_argument("--ptxas", required=True)
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--all", action="store_true", help="include Burn's own kernels")
    args = ap.parse_args()
    params = comptime_params(pathlib.Path(args.ptx_dir) / "cubecl.log")
    print("| module | kernel | comptime | registers | spill stores B | spill loads B | barriers "
          "| smem B |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for index, path in enumerate(sorted(pathlib.Path(args.ptx_dir).glob("module_*.ptx"))):
        text = path.read_text(errors="replace")
        entry = re.search(r"\.entry\s+([A-Za-z_0-9]+)", text)
        name = entry.group(1) if entry else "?"
        if not args.all and name.startswith(BURN_PREFIXES):
            continue
        run = subprocess.run([args.ptxas, f"-arch={args.arch}", "-v", str(path), "-o",
                              "/dev/null"], capture_output=True, text=True)
        log = run.stdout + run.stderr
        if run.returncode != 0:
            print(f"| {path.name} | {name} | | ptxas failed: {log.strip()[:200]} | | | | |")
            continue
        def num(pattern):
            found = re.search(pattern, log)
            return found.group(1) if found else "?"
        cells = [num(p) for p in (r"Used (\d+) registers", r"(\d+) bytes spill stores",
                                  r"(\d+) bytes spill loads", r"used (\d+) barriers",
                                  r"(\d+) bytes smem")]
        comptime = params[index] if index < len(params) else "?"
        print(f"| {path.name} | {name} | {comptime} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
