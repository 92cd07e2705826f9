"""``per_category.csv``: every category of a calibrated model in one table a user can open (5,000 rows for
Open Images, where the card lists only the largest gains and losses)."""

from __future__ import annotations

import csv
import io

from ..decisions import DECISIONS_KEY

__all__ = ["per_category_csv"]

_REPORT = ("index", "name", "n_fit", "n_fit_pos", "n_sel", "n_sel_pos", "original_score", "best_score", "variant",
           "oof_gain", "p_gain", "skipped")
_DECIDED = ("scale", "shift", "thresholds")
_EVALUATED = ("ap", "auroc", "f1", "ece", "brier")


def per_category_csv(data) -> str:
    """The CSV text: the report's columns (selection split), the calibration folded into the row and the
    threshold, and per metric of the first evaluated split its value before and after CFT."""
    result = data.result
    decided = (result.extra or {}).get(DECISIONS_KEY, {})
    first = next(iter(data.evaluation.items()), None)
    header = [*(("selection_" + k if k in ("original_score", "best_score") else k) for k in _REPORT),
              "calibration_scale", "calibration_shift", "threshold"]
    evaluated = []
    if first is not None:
        split, scores = first
        evaluated = [k for k in _EVALUATED if f"per_category_{k}" in scores.get("after", {})]
        header += [f"{split}_{k}_{tag}" for k in evaluated for tag in ("before", "after")]
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(header)
    for i, r in enumerate(result.report):
        row = [getattr(r, k) for k in _REPORT]
        row += [decided[k][i] if k in decided else None for k in _DECIDED]
        for k in evaluated:
            row += [first[1]["before"].get(f"per_category_{k}", [None] * (i + 1))[i],
                    first[1]["after"][f"per_category_{k}"][i]]
        out.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()
