#!/usr/bin/env python3
"""Combines the split `ttq eval` runs of the domain experiment into one records.json per
model (experiment "domain"), so that scripts/plot_results.py draws the domain plot.

SmolLM2: domain-static + domain-calib-{wikitext2,ptb,c4} of this folder.
Gemma:   ../ppl-experiments-h200/gemma3-270m/domain (the first run, which stopped before GPTQ and
         C4-calibrated AWQ w4) + domain-extra-{wikitext2,ptb,c4} of this folder (AWQ w4 and
         GPTQ act-order); a record measured twice keeps the later one (the re-measured AWQ w4
         rows agreed exactly).

    python3 results/ppl-eval-gptq-domain-h200/combine_domain.py && \
      python3 scripts/plot_results.py results/ppl-eval-gptq-domain-h200/*/domain
"""
import json
from pathlib import Path

here = Path(__file__).resolve().parent
sources = {
    "smollm2-135m": [here / "smollm2-135m" / f for f in
                     ["domain-static", "domain-calib-wikitext2", "domain-calib-ptb", "domain-calib-c4"]],
    "gemma3-270m": [here.parent / "ppl-experiments-h200" / "gemma3-270m" / "domain"]
    + [here / "gemma3-270m" / f"domain-extra-{c}" for c in ["wikitext2", "ptb", "c4"]],
}
for model, folders in sources.items():
    records, run = {}, None
    for f in folders:
        doc = json.loads((f / "records.json").read_text())
        run = run or dict(doc["run"])
        for r in doc["records"]:
            records[(r["method"], r["calibration"], r["mode"], r["dataset"])] = r
    run["experiment"] = "domain"
    run["command"] = "combined by results/ppl-eval-gptq-domain-h200/combine_domain.py from " + ", ".join(
        str(f.relative_to(here.parent)) for f in folders)
    out = here / model / "domain"
    out.mkdir(exist_ok=True)
    (out / "records.json").write_text(json.dumps({"run": run, "records": list(records.values())}, indent=1))
    print(model, len(records), "records ->", out)
