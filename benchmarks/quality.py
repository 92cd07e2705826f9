"""B5: quality on the embedded dataset — test mAP / mAUC of the baseline, each CFT variant, ``auto`` and a
full-label oracle, over seeds, known ratios and protocols, with categories improved / degraded.

Per (protocol, known ratio, seed): an Assume-Negative baseline is trained (recipes/train.py defaults), then
the recipe runs CFT-bp, -ga, -refit and ``auto``, selecting on the validation images the trainer held out
(never trained on, partially labeled), and evaluates on the fully labeled test split. The oracle is the
same trainer with every training label known.

    python benchmarks/quality.py                 # 3 seeds x {0.1, 0.3} x {uniform, salient} (~15 min, 2 CPUs)
    python benchmarks/quality.py --seeds 1 --ratios 0.1 --protocols salient
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_cft.recipe import EngineArguments, RecipeArguments, run  # noqa: E402
from hf_cft.training import TrainArguments, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--protocols", nargs="+", default=["uniform", "salient"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    work = tempfile.mkdtemp(prefix="hf_cft_b5_")
    rows = defaultdict(list)
    t0 = time.perf_counter()
    oracle = {}
    for seed in range(args.seeds):
        rep = train(TrainArguments(known_ratio=1.0, seed=seed, output_dir=os.path.join(work, f"oracle-{seed}")))
        oracle[seed] = rep["test"]
    for protocol in args.protocols:
        for ratio in args.ratios:
            for seed in range(args.seeds):
                tag = f"{protocol}-{ratio}-{seed}"
                train(TrainArguments(known_ratio=ratio, protocol=protocol, seed=seed, report_split=None,
                                     output_dir=os.path.join(work, f"base-{tag}")))
                result = run(
                    RecipeArguments(model_name_or_path=os.path.join(work, f"base-{tag}", "best"), known_ratio=ratio,
                                    protocol=protocol, output_dir=os.path.join(work, f"cft-{tag}"),
                                    cache_dir=os.path.join(work, f"cache-{tag}")),
                    EngineArguments(seed=seed, show_progress=False),
                )
                for row in result["table"]:
                    rows[(protocol, ratio, row["method"])].append(row)
                rows[(protocol, ratio, "oracle (all labels known)")].append(
                    {"map": oracle[seed]["map"], "mauc": oracle[seed]["mauc"]})
                print(f"[{time.perf_counter() - t0:6.0f} s] {tag} done", flush=True)
    print(f"\nB5 digits_mosaic: {args.seeds} seed(s), AN baseline (small ResNet, 8 epochs), selection on the "
          "trainer's held-out validation images, evaluation on the fully labeled test split")
    print("| protocol | known | method | test mAP | test mAUC | improved / degraded |")
    print("|---|---:|---|---:|---:|---:|")
    for (protocol, ratio, method), rs in rows.items():
        m = np.array([r["map"] for r in rs])
        a = np.array([r["mauc"] for r in rs])
        imp = "–" if "improved" not in rs[0] or method == "baseline" else \
            f"{sum(r['improved'] for r in rs)} / {sum(r['degraded'] for r in rs)}"
        print(f"| {protocol} | {ratio:.0%} | {method} | {100 * m.mean():.2f} ± {100 * m.std():.2f} | "
              f"{100 * a.mean():.2f} | {imp} |")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
