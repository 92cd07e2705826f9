"""Decisions on digits_mosaic: calibration and thresholds of the no-argument recipe over seeds and settings.

    python benchmarks/decisions.py --seeds 3 --work /tmp/bench_decisions
    python benchmarks/decisions.py --methods ll_r selective cl ignore --protocols uniform --ratios 0.1

Each cell runs the recipe (a baseline trained once per cell with the method, Assume Negative by default, from the
backbone pretrained on single digits; CFT auto under the crossfit rule,
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
from hf_cft.training import TrainArguments, train


def cell(work: str, seed: int, protocol: str, known: float, method: str = "an") -> dict:
    out = os.path.join(work, f"{protocol}-{known:g}-s{seed}" + ("" if method == "an" else f"-{method}"))
    path = os.path.join(out, "cft", "cft_results.json")
    if not os.path.exists(path):
        model = None
        if method != "an":  # the recipe trains Assume Negative itself; another method is trained here
            model = os.path.join(out, "base", "best")
            if not os.path.exists(os.path.join(model, "train_report.json")):
                train(TrainArguments(known_ratio=known, protocol=protocol, seed=seed, method=method,
                                     init_from="digits", epochs=10, output_dir=os.path.join(out, "base"),
                                     report_split=None))
        recipe = RecipeArguments(model_name_or_path=model, protocol=protocol, known_ratio=known,
                                 output_dir=os.path.join(out, "cft"), cache_dir=os.path.join(out, "cache"),
                                 baseline_dir=os.path.join(out, "base"), headroom=False)
        run(recipe, EngineArguments(seed=seed, show_progress=False))
    with open(path) as f:
        return {row["method"]: row for row in json.load(f)["table"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--protocols", nargs="+", default=["uniform", "salient"])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--methods", nargs="+", default=["an"])
    ap.add_argument("--work", default="outputs/bench_decisions")
    args = ap.parse_args()
    print("| method | protocol | known | seed | ECE baseline → kept uncalibrated → kept | Brier baseline → kept | "
          "macro-F1 baseline@0.5 → saved thresholds → tuned on test (share) | mAP kept: calibrated − uncalibrated |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    cells = [(m, p, k, s) for m in args.methods for p in args.protocols for k in args.ratios
             for s in range(args.seeds)]
    for method, protocol, known, seed in cells:
        t = cell(args.work, seed, protocol, known, method)
        base, kept, uncal = t["baseline"], t["CFT-auto"], t["CFT-auto uncalibrated, at 0.5"]
        bound = t["kept rows, thresholds tuned on the evaluation split (upper bound)"]
        pct = lambda row, key: f"{100 * row[key]:.2f}"  # noqa: E731
        print(f"| {method} | {protocol} | {known:.0%} | {seed} | {pct(base, 'ece')} → {pct(uncal, 'ece')} → "
              f"{pct(kept, 'ece')} | {pct(base, 'brier')} → {pct(kept, 'brier')} | {pct(base, 'f1_macro')} → "
              f"{pct(kept, 'f1_macro')} → {pct(bound, 'f1_macro')} ({kept['f1_macro'] / bound['f1_macro']:.0%}) | "
              f"{100 * (kept['map'] - uncal['map']):+.4f} |", flush=True)

if __name__ == "__main__":
    main()
