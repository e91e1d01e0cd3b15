#!/usr/bin/env python3
"""Merged views of results/ppl-eval-gptq-domain-h200 (and the GPTQ/AWQ/RTN/TTQ baselines of ppl-experiments-h200).

    python3 results/ppl-eval-gptq-domain-h200/merge.py        # writes merged.md beside this script, prints it
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
OLD = HERE.parent / "ppl-experiments-h200"
DS = ["WikiText-2", "PTB", "C4 (train-00000 sample)"]
DSH = ["WikiText-2", "PTB", "C4"]


def load(folder):
    return json.loads((folder / "records.json").read_text())["records"]


def f(x):
    return "–" if x is None else f"{x:.4f}"


def calib_name(c):
    if c is None:
        return "–"
    return c.split(" 128x512")[0].replace("C4 (train-00000 sample)", "C4")


def table(rows, head):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < len(head) - len(DS) - 1 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def ppl_by(recs):
    """(method, calib, mode) -> {dataset: ppl}"""
    d = {}
    for r in recs:
        d.setdefault((r["method"], calib_name(r["calibration"]), r["mode"]), {})[r["dataset"]] = r["perplexity"]
    return d


def mean3(v):
    xs = [v.get(k) for k in DS]
    return None if any(x is None for x in xs) else sum(xs) / 3


def row(label, calib, mode, v):
    return [label, calib, mode] + [f(v.get(k)) for k in DS] + [f(mean3(v))]


out = []
# 1. SmolLM2 domain table
sm = HERE / "smollm2-135m"
d = {}
for sub in ["domain-static", "domain-calib-wikitext2", "domain-calib-ptb", "domain-calib-c4"]:
    d.update(ppl_by(load(sm / sub)))
out.append("## 1. SmolLM2-135M: domain (4 windows x 2048, scored on tokens 1024..2047 of each window, calibration 128x512 seed 0)\n")
for bits in (3, 4):
    rows = [row("fp", "–", "static", d[("fp", "–", "static")])]
    for k, v in d.items():
        m, c, mode = k
        if m == "fp" or f":w{bits}:" not in m + ":":
            continue
    order = [f"rtn:w{bits}:g128", f"ttq:w{bits}:g128:a0.25:l1e-4", f"ttq:w{bits}:g128:a0.5:l1e-4", f"awq:w{bits}:g128", f"gptq:w{bits}:g128:act"]
    for m in order:
        for (mm, c, mode), v in d.items():
            if mm == m:
                rows.append(row(m, c, mode, v))
    out.append(f"### {bits} bits\n")
    out.append(table(rows, ["method", "calibration", "mode"] + DSH + ["mean"]) + "\n")

# 2. Gemma domain additions, with the 27b domain rows for reference
gm = HERE / "gemma3-270m"
new = {}
for c in ["wikitext2", "ptb", "c4"]:
    new.update(ppl_by(load(gm / f"domain-extra-{c}")))
oldd = ppl_by(load(OLD / "gemma3-270m" / "domain"))
out.append("## 2. Gemma3-270M: domain additions (same protocol as 27b `experiment domain`: scored on tokens 1024..2047)\n")
rows = []
for bits in (3, 4):
    for m in [f"awq:w{bits}:g128", f"gptq:w{bits}:g128", f"gptq:w{bits}:g128:act"]:
        for c in ["WikiText-2", "PTB", "C4"]:
            for src, dd in (("27b", oldd), ("27c (new)", new)):
                v = dd.get((m, c, "static"))
                if v:
                    rows.append([m + f" [{src}]", c, "static"] + [f(v.get(k)) for k in DS] + [f(mean3(v))])
for k in [("fp", "–", "static"), ("ttq:w3:g128:a0.25:l1e-4", "–", "window"), ("ttq:w4:g128:a0.25:l1e-4", "–", "window")]:
    rows.append(row(k[0] + " [27b]", k[1], k[2], oldd[k]))
out.append(table(rows, ["method [run]", "calibration", "mode"] + DSH + ["mean"]) + "\n")
# reproducibility of rows that were measured in both runs
rep = []
for k, v in new.items():
    if k in oldd:
        diffs = [v[x] - oldd[k][x] for x in DS]
        rep.append(f"- {k[0]} / {k[1]}: new − 27b = " + ", ".join(f"{x:+.6f}" for x in diffs))
if rep:
    out.append("Rows measured in both 27b and 27c (reproducibility):\n\n" + "\n".join(rep) + "\n")

# 3. GPTQ act-order vs old GPTQ, 2-5 bits, both models (methods protocol: full windows, C4 calibration)
out.append("## 3. GPTQ act-order (27c) vs GPTQ without act-order and AWQ/RTN/TTQ/TTQ+LR (27b `methods`), 4 windows x 2048 scored in full, C4 calibration\n")
for model in ["smollm2-135m", "gemma3-270m"]:
    o = ppl_by(load(OLD / model / "methods"))
    a = ppl_by(load(HERE / model / "methods-gptq-act"))
    def g(dd, m):
        for (mm, c, mode), v in dd.items():
            if mm == m:
                return v
        return {}
    out.append(f"### {model}: per dataset\n")
    rows = []
    for b in (2, 3, 4, 5):
        for lab, dd, m in (("gptq (no act) [27b]", o, f"gptq:w{b}:g128"), ("gptq act [27c]", a, f"gptq:w{b}:g128:act")):
            v = g(dd, m)
            rows.append([str(b), lab, m] + [f(v.get(k)) for k in DS] + [f(mean3(v))])
    out.append(table(rows, ["bits", "run", "method"] + DSH + ["mean"]) + "\n")
    out.append(f"### {model}: mean perplexity over the three datasets\n")
    cols = [("gptq [27b]", o, "gptq:w{b}:g128"), ("gptq act [27c]", a, "gptq:w{b}:g128:act"), ("awq [27b]", o, "awq:w{b}:g128"),
            ("rtn [27b]", o, "rtn:w{b}:g128"), ("ttq a0.25 [27b]", o, "ttq:w{b}:g128:a0.25:l1e-4"), ("ttq+lr r16 [27b]", o, "ttqlr:w{b}:g128:a0.25:l1e-4:r16")]
    rows = []
    for b in (2, 3, 4, 5):
        rows.append([str(b)] + [f(mean3(g(dd, m.format(b=b)))) for _, dd, m in cols])
    fpv = g(o, "fp")
    head = ["bits"] + [c[0] for c in cols]
    out.append("| " + " | ".join(head) + " |\n|---|" + "---:|" * len(cols) + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows))
    out.append(f"\n(fp [27b]: mean {f(mean3(fpv))})\n")

# 4. SmolLM2 groups: TTQ at 2g vs AWQ at g
gr = ppl_by(load(sm / "groups"))
def gv(m):
    for (mm, c, mode), v in gr.items():
        if mm == m:
            return v["WikiText-2"]
out.append("## 4. SmolLM2-135M groups (WikiText-2, 4 windows x 2048 scored in full; AWQ calibrated on WikiText-2): TTQ a0.25 at group 2g vs AWQ at group g\n")
rows = []
for b in (3, 4):
    for gsz in (32, 64, 128, 256, 512):
        aw = gv(f"awq:w{b}:g{gsz}")
        tt = gv(f"ttq:w{b}:g{2*gsz}:a0.25:l1e-4")
        rows.append([str(b), str(gsz), f(aw), str(2 * gsz), f(tt), f"{tt-aw:+.4f}", f"{tt/aw:.4f}", "yes" if tt <= aw else "no",
                     f(gv(f"ttq:w{b}:g{gsz}:a0.25:l1e-4")), f(gv(f"rtn:w{b}:g{gsz}"))])
out.append("| bits | g | AWQ@g | 2g | TTQ@2g | TTQ@2g − AWQ@g | TTQ@2g / AWQ@g | TTQ@2g ≤ AWQ@g | TTQ@g | RTN@g |\n|---|---|---:|---|---:|---:|---:|---|---:|---:|\n" +
           "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n")
rows = []
for b in (3, 4):
    for gs in ["g32", "g64", "g128", "g256", "g512", "g1024", "grow"]:
        rows.append([str(b), gs, f(gv(f"rtn:w{b}:{gs}")), f(gv(f"ttq:w{b}:{gs}:a0.25:l1e-4")), f(gv(f"awq:w{b}:{gs}"))])
out.append("All groups (WikiText-2 perplexity):\n\n| bits | group | RTN | TTQ a0.25 | AWQ |\n|---|---|---:|---:|---:|\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n")

text = "\n".join(out)
(HERE / "merged.md").write_text(text)
print(text)
