"""The run's report as the page's second tab shows it: the before / after table (``cft_results.json``, as the
recipe prints it), the plots, and one row per category with its gain and the selection evidence
(``cft_report.json``; the evaluation split's per-category scores from ``per_category.csv`` when the folder has it).

No Gradio here: plain rows and text, read from a folder or a Hub repo.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass, field

from ..constants import CALIBRATION_PLOT_NAME, CFT_RESULTS_NAME, GAINS_PLOT_NAME, PER_CATEGORY_CSV_NAME
from ..engine import CFTResult
from ..io import read_json
from ..modeling.load import model_file
from ..recipe.report import format_table
from .model import AppModel

logger = logging.getLogger(__name__)

__all__ = ["RunReport", "category_headers", "category_rows", "read_run_report"]

PLOTS = {GAINS_PLOT_NAME: "Per-category gains", CALIBRATION_PLOT_NAME: "Calibration (reliability diagram)"}
_LABELS = {"ap": "AP", "auroc": "AUROC"}
_CSV_SCORE = re.compile(r"^(?P<split>.+)_(?P<metric>ap|auroc)_(?P<tag>before|after)$")


@dataclass
class RunReport:
    """What the report tab shows.

    Attributes:
        summary: a few lines of markdown (categories, rows changed and skipped, the variant and the selection).
        table: the recipe's before / after table as markdown ("" when the folder has no ``cft_results.json``).
        plots: ``(local path, caption)`` of each plot the folder has.
        headers: the per-category table's columns (the ``eval`` ones named after the split and metric).
        rows: one per category, sorted by gain (the evaluation split's when known, else the selection split's).
    """

    summary: str
    table: str = ""
    plots: list[tuple[str, str]] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)


def _points(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(100 * value, 2)


def _eval_scores(path: str | None, metric: str) -> tuple[str | None, dict[int, tuple[float, float]]]:
    """``(split, {index: (before, after)})`` of ``metric`` from ``per_category.csv`` (None, {} without one)."""
    if path is None:
        return None, {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        cols = {}
        for name in reader.fieldnames or []:
            m = _CSV_SCORE.match(name)
            if m and m["metric"] == metric:
                cols[m["tag"]], split = name, m["split"]
        if len(cols) < 2:
            return None, {}
        scores = {}
        for row in reader:
            if row[cols["before"]] and row[cols["after"]]:
                scores[int(row["index"])] = (float(row[cols["before"]]), float(row[cols["after"]]))
    return split, scores


def category_headers(selection_metric: str, split: str | None = None, metric: str | None = None) -> list[str]:
    """The columns of :func:`category_rows`: the evaluation split's ``metric`` before / after / gain when
    ``split`` is given, then the selection evidence (scores by ``selection_metric``)."""
    sel = _LABELS.get(selection_metric, selection_metric)
    head = ["#", "category", "kept row"]
    if split is not None:
        head += [f"{split} {_LABELS.get(metric, metric)} {t}" for t in ("before", "after", "gain")]
    return head + [f"selection {sel} {t}" for t in ("before", "after", "gain")] + [
        "n_sel", "n_sel_pos", "oof_gain", "p_gain", "threshold", "reason"]


def category_rows(result: CFTResult, thresholds: list[float] | None = None,
                  eval_scores: dict[int, tuple[float, float]] | None = None,
                  names: list[str] | None = None) -> list[list]:
    """One row per category (the columns of :func:`category_headers`; scores and gains in points), sorted by the
    evaluation gain when ``eval_scores`` are given, else by the selection gain, largest first (unknown last). A
    category the report does not name is named by ``names`` (the model's labels), else by its index."""
    rows = []
    for r in result.report:
        name = r.name or (names[r.index] if names is not None else str(r.index))
        row = [r.index, name, r.variant]
        if eval_scores:
            before, after = eval_scores.get(r.index, (None, None))
            row += [_points(before), _points(after), None if before is None else _points(after - before)]
        row += [_points(r.original_score), _points(r.best_score), _points(r.gain), r.n_sel, r.n_sel_pos,
                _points(r.oof_gain), None if r.p_gain is None else round(r.p_gain, 3),
                None if thresholds is None else round(thresholds[r.index], 4),
                r.reason or (f"skipped: {r.skipped}" if r.skipped else "")]
        rows.append(row)
    gain = 5  # the evaluation gain when given, else the selection gain
    return sorted(rows, key=lambda row: (row[gain] is None, -(row[gain] or 0.0), row[0]))


def _summary(result: CFTResult) -> str:
    s = result.summary()
    lines = [f"**{s['categories']} categories**, {s['changed']} rows changed by CFT, {s['skipped']} skipped; "
             f"variant `{result.config.variant}`, selection rule `{s['rule']}`, chosen by "
             f"`{result.config.judged_by}`."]
    if result.selection:
        lines.append(result.selection[0].upper() + result.selection[1:])
    return "\n\n".join(lines)


def read_run_report(model: AppModel) -> RunReport:
    """The report of ``model``'s run, from its folder or Hub repo."""
    result = model.head.cft_report
    if result is None:  # load_app_model refuses a model without a report
        raise ValueError(f"{model.source} has no CFT report")

    def fetch(name: str) -> str | None:
        return model_file(model.source, name, model.revision, model.token)

    out = RunReport(summary=_summary(result))
    results_path = fetch(CFT_RESULTS_NAME)
    if results_path is not None:
        data = read_json(results_path)
        out.table = format_table(data["table"], data.get("eval_split", "evaluation"), data.get("kept", ""))
    out.plots = [(path, caption) for name, caption in PLOTS.items() if (path := fetch(name)) is not None]
    metric = result.config.metric
    split, scores = _eval_scores(fetch(PER_CATEGORY_CSV_NAME), metric)
    out.headers = category_headers(result.config.judged_by, split, metric)
    out.rows = category_rows(result, model.thresholds, scores, model.names)
    return out
