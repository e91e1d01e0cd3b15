#!/usr/bin/env python3
"""Prints a kernel's SASS with the scheduling control bits that nvdisasm does not show.

Usage: sass_ctrl.py MODULE.ptx [--ptxas PTXAS] [--nvdisasm NVDISASM] [--grep REGEX]

Compiles one PTX module (as run.sh leaves them in PTX_DIR) for sm_90a, disassembles it with
`nvdisasm -hex` and decodes, for every instruction, the control field of its 128-bit
encoding (bits 105-125, the high word's bits 41-61): the stall count, the scoreboard a
variable-latency instruction (a load) sets when its result is written (`WR=SBn`) or when
its sources have been read (`RD=SBn`), and the scoreboards an instruction waits for
(`WAIT=...`). A wait on a scoreboard waits for every instruction outstanding on it, so a
first use that waits on the scoreboard of a load issued just before it waits that load's
whole latency, whatever it needs itself (why register prefetching in the GEMVs failed:
docs/kernels.md, "Tried and dropped").
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

OFFLINE = os.environ.get("OFFLINE_CUDA", "/work/cuda-offline")


def decode(sass: str):
    """Yields (address, instruction, stall, write SB, read SB, waited SBs) per instruction."""
    lines = sass.splitlines()
    i = 0
    while i + 1 < len(lines):
        m = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);\s*/\* (0x[0-9a-f]{16}) \*/", lines[i])
        if not m:
            i += 1
            continue
        hi = re.search(r"/\* (0x[0-9a-f]{16}) \*/", lines[i + 1])
        if not hi:
            i += 1
            continue
        ctrl = (int(hi.group(1), 16) >> 41) & 0x1FFFFF
        wr, rd = (ctrl >> 5) & 7, (ctrl >> 8) & 7
        waits = [b for b in range(6) if (ctrl >> 11) >> b & 1]
        yield m.group(1), m.group(2).strip(), ctrl & 0xF, wr, rd, waits
        i += 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ptx")
    ap.add_argument("--ptxas", default=f"{OFFLINE}/x/nvidia/cuda_nvcc/bin/ptxas")
    ap.add_argument("--nvdisasm", default=f"{OFFLINE}/x/nvidia/cu13/bin/nvdisasm")
    ap.add_argument("--grep", help="print only instructions matching this regex, or that wait")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        subprocess.run([args.ptxas, "-arch=sm_90a", "-O3", args.ptx, "-o", cubin], check=True)
        sass = subprocess.run(
            [args.nvdisasm, "-hex", "-c", cubin],
            check=True, capture_output=True, text=True,
        ).stdout
    pattern = re.compile(args.grep) if args.grep else None
    for addr, ins, stall, wr, rd, waits in decode(sass):
        if pattern and not (pattern.search(ins) or waits):
            continue
        text = f"{addr} {ins:64s} stall={stall:2d}"
        if wr != 7:
            text += f" WR=SB{wr}"
        if rd != 7:
            text += f" RD=SB{rd}"
        if waits:
            text += " WAIT=" + ",".join(f"SB{b}" for b in waits)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
