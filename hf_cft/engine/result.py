"""`CFTResult`: the new rows and a per-category report."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from ..constants import CFT_REPORT_NAME
from ..io import read_json, write_json
from .config import CFTConfig

__all__ = ["CFT_REPORT_NAME", "CFTResult", "CategoryReport"]

_SERIALIZED = ("config", "selection", "summary", "categories")  # to_dict's own keys; the others are `extra`


@dataclass
class CategoryReport:
    """What happened to one category's row.

    Attributes:
        index: the category's row in the classifier.
        name: its name when known.
        n_fit: known labels used to fit (training images outside the selection hold-out).
        n_fit_pos: known positives among them.
        n_sel: known labels of the selection split.
        n_sel_pos: known positives among them.
        original_score: selection score of the trained row (candidate 0).
        best_score: selection score of the row kept (equals ``original_score`` when unchanged).
        best_step: epoch / generation of the row kept (0: the trained row was kept).
        steps_run: epochs / generations run before the row stopped.
        variant: the variant that produced the kept row ("original" when unchanged).
        policy: the uncertain-label policy of the kept row (CheXpert greedy), else None.
        detail: variant-specific detail of the kept row (refit: the L2 strength).
        note: the variant's own words about this category's fit (em: the unknown labels it used and the prior it
            estimated); under a joint choice, those of the chosen run.
        alpha: shrinkage of the candidate toward the trained row (``w0 + α·(w_new − w0)``; crossfit rule).
        oof_gain: cross-fitted gain of the candidate procedure over the trained row on the selection labels.
        gain_se: its stratified paired-bootstrap standard error.
        posterior_gain: the gain after pooling across categories (empirical Bayes).
        p_gain: the pooled posterior probability that the gain is positive.
        reason: why the row was kept or replaced, in words.
        candidates: per variant / policy tried (``auto`` and greedy runs), its selection score and evidence.
        skipped: why the category was not fitted (None when it was).
    """

    index: int
    name: str | None = None
    n_fit: int = 0
    n_fit_pos: int = 0
    n_sel: int = 0
    n_sel_pos: int = 0
    original_score: float | None = None
    best_score: float | None = None
    best_step: int = 0
    steps_run: int = 0
    variant: str = "original"
    policy: str | None = None
    detail: str | None = None
    note: str | None = None
    alpha: float | None = None
    oof_gain: float | None = None
    gain_se: float | None = None
    posterior_gain: float | None = None
    p_gain: float | None = None
    reason: str | None = None
    candidates: dict[str, dict[str, Any]] | None = None
    skipped: str | None = None

    @property
    def changed(self) -> bool:
        return self.variant != "original"

    @property
    def gain(self) -> float | None:
        if self.original_score is None or self.best_score is None:
            return None
        return self.best_score - self.original_score


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _clean(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


@dataclass
class CFTResult:
    """New classifier rows and the report of how each was chosen.

    Attributes:
        weight: C×d new weight (a new tensor; the input is never modified).
        bias: C new bias.
        report: one :class:`CategoryReport` per category, in row order.
        config: the configuration used.
        selection: a plain statement of the selection protocol.
        runs: tag → the candidates of each variant run (rows and raw reports), from which the rows were
            decided; not serialized.
        judged: under the crossfit rule, the (weight, bias) each category's evidence was computed for: its
            candidate, written or not (where the choice made without its labels is the trained row, or it was
            not fitted, the trained row; decided run by run among several runs, the row written). Lets a
            held-out test set check the evidence (``benchmarks/quality.py``); None under the strict rule; not
            serialized.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    report: list[CategoryReport]
    config: CFTConfig
    selection: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict, repr=False)
    judged: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def n_changed(self) -> int:
        return sum(r.changed for r in self.report)

    @property
    def n_skipped(self) -> int:
        return sum(r.skipped is not None for r in self.report)

    def summary(self) -> dict[str, Any]:
        fitted = [r for r in self.report if r.skipped is None]
        orig = [r.original_score for r in fitted]
        best = [r.best_score for r in fitted]
        return {
            "rule": self.config.selection_rule,
            "categories": len(self.report),
            "fitted": len(fitted),
            "changed": self.n_changed,
            "skipped": self.n_skipped,
            "selection_score_original": _mean(orig),
            "selection_score_best": _mean(best),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: config, selection protocol, summary and the per-category report."""
        cats = []
        for r in self.report:
            row = {k: _clean(v) for k, v in asdict(r).items()}
            if r.candidates is not None:
                row["candidates"] = {k: {kk: _clean(vv) for kk, vv in v.items()} for k, v in r.candidates.items()}
            row["changed"] = r.changed
            cats.append(row)
        return {
            "config": self.config.to_dict(),
            "selection": self.selection,
            "summary": self.summary(),
            "categories": cats,
            **self.extra,
        }

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the report as JSON, atomically."""
        write_json(path, self.to_dict(), indent=2, end="\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], weight=None, bias=None) -> CFTResult:
        """Rebuild a result from :meth:`to_dict`'s output.

        The JSON report holds no rows: pass the ``weight`` (C×d) and ``bias`` (C) they were applied as (e.g. a
        calibrated model's :attr:`CFTHead.weight` / ``bias``), or leave them None to get empty tensors. The
        candidates of every variant (``runs``) are not serialized; the result has none. Report keys unknown to
        this version are dropped.
        """
        known = {f.name for f in fields(CategoryReport)}
        report = [CategoryReport(**{k: v for k, v in row.items() if k in known}) for row in data["categories"]]
        n = len(report)
        weight = torch.empty(n, 0) if weight is None else torch.as_tensor(weight)
        bias = torch.empty(n) if bias is None else torch.as_tensor(bias)
        if weight.shape[0] != n or tuple(bias.shape) != (n,):
            raise ValueError(f"the report has {n} categories but `weight` has {weight.shape[0]} rows and `bias` "
                             f"shape {tuple(bias.shape)}")
        return cls(weight=weight, bias=bias, report=report, config=CFTConfig.from_dict(data["config"]),
                   selection=data.get("selection", ""),
                   extra={k: v for k, v in data.items() if k not in _SERIALIZED})

    @classmethod
    def from_json(cls, path: str | os.PathLike, weight=None, bias=None) -> CFTResult:
        """Read a report written by :meth:`to_json` (a ``cft_report.json`` file or the folder holding one).

        See :meth:`from_dict` for ``weight`` and ``bias``.
        """
        if os.path.isdir(path):
            path = os.path.join(path, CFT_REPORT_NAME)
        return cls.from_dict(read_json(path), weight=weight, bias=bias)

    def to_markdown(self, rows: list[int] | None = None) -> str:
        """A per-category markdown table (selection scores and gains in points).

        ``rows``: positions in :attr:`report` to list, in that order (default: every category).
        """
        metric = self.config.judged_by.upper()
        crossfit = self.config.selection_rule == "crossfit"
        head = f"| # | category | fit (pos) | selection (pos) | {metric} before | {metric} after | gain |"
        rule = "|---:|---|---:|---:|---:|---:|---:|"
        if crossfit:
            head += " cross-fitted gain (95%) | P(gain > 0) | α |"
            rule += "---:|---:|---:|"
        lines = [head + " kept |", rule + "---|"]
        for r in (self.report if rows is None else [self.report[i] for i in rows]):
            gain = r.gain
            kept = f"skipped: {r.skipped}" if r.skipped else " ".join(
                x for x in (r.variant, r.policy, r.detail and f"({r.detail})") if x)
            row = (f"| {r.index} | {r.name or r.index} | {r.n_fit} ({r.n_fit_pos}) | {r.n_sel} ({r.n_sel_pos}) | "
                   f"{_pct(r.original_score)} | {_pct(r.best_score)} | "
                   f"{'–' if gain is None else f'{100 * gain:+.2f}'} |")
            if crossfit:
                cf = "–" if r.oof_gain is None or r.skipped else f"{100 * r.oof_gain:+.2f} ± {196 * r.gain_se:.2f}"
                prob = "–" if r.p_gain is None or r.skipped else f"{r.p_gain:.2f}"
                alpha = "–" if r.alpha is None or r.skipped or not r.changed else f"{r.alpha:g}"
                row += f" {cf} | {prob} | {alpha} |"
            lines.append(row + f" {kept} |")
        return "\n".join(lines) + "\n"
