"""What the unknown labels can add to a linear row, on a trained digits_mosaic baseline's features.

For each baseline folder (the trainer's output: ``train_report.json`` and ``best/``; B5's ``base-*`` folders
or the recipe's ``--baseline_dir``), the features of the training and test splits are extracted and every
category's row is fitted from scratch in several ways, each with its L2 strength tuned per category **on the
test split** — a ceiling for each way of using the labels, never a way to choose rows:

- ``known-label row``: logistic regression on the known labels (the headroom table's upper bound);
- ``all-label row``: on every label of the fit images (the head oracle);
- ``PU``: known positives against every other fit image (the non-traditional classifier of positive-unlabeled
  learning: under labels missing at random it ranks as the posterior does);
- ``known + unknowns as weak negatives``: the known labels, and each unknown as a negative of weight 0.1;
- ``label spreading → row``: scikit-learn's ``LabelSpreading`` (k-NN graph over every fit image) fills the
  unknowns with soft labels, and a row is fitted on them (the cluster assumption, non-parametrically);
- ``k-NN on the known labels``: not a row; how well the features' neighbourhoods alone predict.

A way that used the unknowns well would pass the known-label row; the all-label row shows what labels would.
The selection images (the trainer's validation rows) are left out of every fit, as in CFT.

    python benchmarks/unknowns.py /tmp/b5/base-uniform-0.1-0-an /tmp/b5/base-salient-0.1-0-an
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_cft.data import label_arrays, load_partial_dataset, partial_info  # noqa: E402
from hf_cft.head import CFTHead  # noqa: E402

STRENGTHS = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0]  # scikit-learn's C = 1 / (λ · n)


def load_features(base: str, cache: str) -> dict[str, np.ndarray]:
    """Features and labels of a trained baseline: fit images (validation rows left out) and the test split."""
    with open(os.path.join(base, "train_report.json")) as f:
        report = json.load(f)
    ds = load_partial_dataset("digits_mosaic", **report["dataset_config"])
    names = partial_info(ds["train"])["categories"]
    y, m, full = label_arrays(ds["train"], ("labels", "label_mask", "full_labels"))
    ye, me = label_arrays(ds["test"])
    head = CFTHead.from_pretrained(os.path.join(base, "best"), category_names=names)
    z = np.asarray(head.extract(ds["train"], cache_dir=cache, show_progress=False).features, dtype=np.float64)
    ze = np.asarray(head.extract(ds["test"], cache_dir=cache, show_progress=False).features, dtype=np.float64)
    fit = np.setdiff1d(np.arange(len(z)), np.asarray(report["validation_rows"]))
    mu, sd = z[fit].mean(0), z[fit].std(0) + 1e-6
    return {"x": (z[fit] - mu) / sd, "y": y[fit], "known": m[fit].astype(bool), "full": full[fit],
            "xe": (ze - mu) / sd, "ye": ye, "me": me.astype(bool)}


def _test_ap(data: dict, c: int, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    known = data["me"][:, c]
    return float(average_precision_score(data["ye"][known, c], scores[known]))


def _row(x, targets, weights, strength: float, xe) -> np.ndarray:
    """Test scores of a logistic row fitted on soft targets (each example once as positive, once as negative)."""
    from sklearn.linear_model import LogisticRegression

    xs = np.vstack([x, x])
    ys = np.r_[np.ones(len(x)), np.zeros(len(x))]
    ws = np.r_[weights * targets, weights * (1 - targets)]
    keep = ws > 0
    model = LogisticRegression(C=strength, max_iter=3000).fit(xs[keep], ys[keep], sample_weight=ws[keep])
    return model.decision_function(xe)


def ways(data: dict, c: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per way of using the labels of category ``c``: the (targets, weights) of every fit image."""
    y, known, full = data["y"][:, c].astype(float), data["known"][:, c], data["full"][:, c].astype(float)
    positive = (known & (y > 0.5)).astype(float)
    return {
        "known-label row (upper bound)": (y, known.astype(float)),
        "all-label row (head oracle)": (full, np.ones_like(y)),
        "PU: known positives against the rest": (positive, np.ones_like(y)),
        "known + unknowns as weak negatives (0.1)": (positive, np.where(known, 1.0, 0.1)),
        "label spreading -> row": (_spread(data, c), np.ones_like(y)),
    }


def _spread(data: dict, c: int) -> np.ndarray:
    from sklearn.semi_supervised import LabelSpreading

    known = data["known"][:, c]
    labels = np.where(known, data["y"][:, c], -1).astype(int)
    model = LabelSpreading(kernel="knn", n_neighbors=30, alpha=0.5, max_iter=100).fit(data["x"], labels)
    return np.where(known, data["y"][:, c], model.label_distributions_[:, 1])


def knn_ap(data: dict, c: int) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    known = data["known"][:, c]
    model = KNeighborsClassifier(40).fit(data["x"][known], data["y"][known, c])
    return _test_ap(data, c, model.predict_proba(data["xe"])[:, 1])


def ceilings(data: dict) -> dict[str, float]:
    """Test mAP of every way, λ tuned per category on test."""
    per: dict[str, list[float]] = {}
    for c in range(data["y"].shape[1]):
        for name, (targets, weights) in ways(data, c).items():
            aps = [_test_ap(data, c, _row(data["x"], targets, weights, s, data["xe"])) for s in STRENGTHS]
            per.setdefault(name, []).append(max(aps))
        per.setdefault("k-NN on the known labels (40 neighbours; not a row)", []).append(knn_ap(data, c))
    return {name: 100 * float(np.mean(v)) for name, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("baselines", nargs="+", help="trained baseline folders (train_report.json and best/)")
    ap.add_argument("--cache", default=None, help="feature cache folder (default: a temporary one)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    cache = args.cache or tempfile.mkdtemp(prefix="hf_cft_unknowns_")
    table: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for base in args.baselines:
        result = ceilings(load_features(base, cache))
        print(f"[{time.perf_counter() - t0:5.0f} s] {os.path.basename(base.rstrip('/'))}: "
              + ", ".join(f"{k.split(':')[0].split(' (')[0]} {v:.2f}" for k, v in result.items()), flush=True)
        for k, v in result.items():
            table.setdefault(k, []).append(v)
    bound = np.array(table["known-label row (upper bound)"])
    print(f"\n{len(args.baselines)} baseline(s); test mAP, λ tuned per category on the test split (ceilings)")
    print("| way of using the labels | test mAP | vs known-label row (min … max) |\n|---|---:|---:|")
    for k, v in table.items():
        d = np.array(v) - bound
        print(f"| {k} | {np.mean(v):.2f} ± {np.std(v):.2f} | {d.mean():+.2f} ({d.min():+.2f} … {d.max():+.2f}) |")


if __name__ == "__main__":
    main()
