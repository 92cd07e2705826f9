"""Decisions on digits_mosaic: calibration and thresholds of the no-argument recipe over seeds and settings.

    python benchmarks/decisions.py --seeds 3 --work /tmp/bench_decisions

Each cell runs the recipe (an Assume-Negative baseline trained once per cell, CFT auto under the crossfit rule,
then the calibration and thresholds fitted on the trainer's held-out validation images) and reads its
``cft_results.json``: macro ECE and Brier score before and after, macro-F1 of the baseline at 0.5, of the kept
rows at their saved thresholds and at thresholds tuned on the test split (an upper bound, reporting only), and
the mAP of the kept rows with and without the calibration step (equal by construction).
"""

from __future__ import annotations

import argparse
import json
import os

from hf_cft.recipe import EngineArguments, RecipeArguments, run


def cell(work: str, seed: int, protocol: str, known: float) -> dict:
    out = os.path.join(work, f"{protocol}-{known:g}-s{seed}")
    path = os.path.join(out, "cft", "cft_results.json")
    if not os.path.exists(path):
        recipe = RecipeArguments(protocol=protocol, known_ratio=known, output_dir=os.path.join(out, "cft"),
                                 cache_dir=os.path.join(out, "cache"), baseline_dir=os.path.join(out, "base"),
                                 headroom=False)
        run(recipe, EngineArguments(seed=seed, show_progress=False))
    with open(path) as f:
        return {row["method"]: row for row in json.load(f)["table"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--protocols", nargs="+", default=["uniform", "salient"])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--work", default="outputs/bench_decisions")
    args = ap.parse_args()
    print("| protocol | known | seed | ECE baseline → kept uncalibrated → kept | Brier baseline → kept | macro-F1 "
          "baseline@0.5 → saved thresholds → tuned on test (share) | mAP kept: calibrated − uncalibrated |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for protocol in args.protocols:
        for known in args.ratios:
            for seed in range(args.seeds):
                t = cell(args.work, seed, protocol, known)
                base, kept, uncal = t["baseline"], t["CFT-auto"], t["CFT-auto uncalibrated, at 0.5"]
                bound = t["kept rows, thresholds tuned on the evaluation split (upper bound)"]
                print(f"| {protocol} | {known:.0%} | {seed} | {100 * base['ece']:.2f} → {100 * uncal['ece']:.2f} → "
                      f"{100 * kept['ece']:.2f} | "
                      f"{100 * base['brier']:.2f} → {100 * kept['brier']:.2f} | {100 * base['f1_macro']:.2f} → "
                      f"{100 * kept['f1_macro']:.2f} → {100 * bound['f1_macro']:.2f} "
                      f"({kept['f1_macro'] / bound['f1_macro']:.0%}) | {100 * (kept['map'] - uncal['map']):+.4f} |",
                      flush=True)


if __name__ == "__main__":
    main()
