"""The per-category decision: which run's candidate row replaces the trained row, if any, and why.

A *run* is one variant (or variant / uncertain-label policy) over all categories: its candidate rows and its
raw per-category reports (selection scores, cross-fitted gain and standard error, α). ``decide`` is a pure
function of the runs, so a sharded run decides again, identically, once the shards are gathered.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..constants import IN_ANOTHER_SHARD
from ..metrics.core import METRICS
from .config import CFTConfig
from .result import CategoryReport, CFTResult
from .selection import choose_crossfit, crossfit_table, posterior_gains
from .variants import VARIANTS

__all__ = ["IN_ANOTHER_SHARD", "Run", "decide", "merge_shards"]


@dataclasses.dataclass
class Run:
    """One variant's candidates: rows (C×d, C), the raw report of every category and, for the crossfit rule,
    each fitted category's recorded trajectory and listed selection scores (``records``, by category)."""

    weight: torch.Tensor
    bias: torch.Tensor
    report: list[CategoryReport]
    variant: str = ""
    records: dict[int, dict] | None = None


def _crossfit(run: Run, config: CFTConfig, table: torch.Tensor | None) -> tuple[Run, dict]:
    """The run with its candidates chosen by the crossfit rule (step and α shared by the categories, each
    category's judged without its own labels), with out-of-fold gains."""
    fitted = [c for c, r in enumerate(run.report) if r.skipped is None and c in (run.records or {})]
    report = [dataclasses.replace(r) for r in run.report]
    w, b = run.weight.clone(), run.bias.clone()
    if not fitted:
        return Run(w, b, report, run.variant), {}
    choice = choose_crossfit([run.records[c] for c in fitted], METRICS[config.judged_by], config.selection_alphas,
                             config.selection_folds, config.selection_bootstrap, config.seed, table=table)
    for j, c in enumerate(fitted):
        r = report[c]
        step = choice.step[j]
        w[c], b[c] = choice.weight[j].to(w.dtype), choice.bias[j].to(b.dtype)
        r.best_step, r.alpha = step, choice.alpha[j]
        r.best_score = float(choice.score[j])
        r.oof_gain, r.gain_se = float(choice.oof_gain[j]), float(choice.gain_se[j])
        r.variant = run.variant if step > 0 else "original"
        r.detail = VARIANTS[run.variant].describe(config, step) if run.variant in VARIANTS else None
    summary = {"mean_crossfit_gain": float(choice.oof_gain.nanmean())}
    step, alpha = choice.overall
    summary.update({"step": step, "alpha": alpha, "held_out": "categories" if choice.by_category else "image folds"})
    if choice.by_category:  # categories whose choice without their own labels differs from the overall one
        summary["other_choices"] = {str(choice.index[j]): {"step": choice.step[j], "alpha": choice.alpha[j]}
                                    for j in range(len(fitted)) if (choice.step[j], choice.alpha[j]) != (step, alpha)}
    else:
        summary["fold_choices"] = [{"step": g, "alpha": a} for g, a in choice.fold_choices[0]]
    return Run(w, b, report, run.variant, run.records), summary


def _split_tag(tag: str) -> tuple[str, str | None]:
    variant, _, policy = tag.partition("/")
    return variant, policy or None


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


# long: both rules, then the shared per-category bookkeeping (policies, candidates, reasons) in one pass
def decide(runs: dict[str, Run], weight0: torch.Tensor, bias0: torch.Tensor, config: CFTConfig,
           protocol: str) -> CFTResult:
    """Per category: the trained row, or one run's candidate, by ``config.selection_rule``."""
    original_runs = runs
    n_cat = weight0.shape[0]
    crossfit = config.selection_rule == "crossfit"
    post: dict[str, dict[int, tuple[float, float, float]]] = {}
    chosen_runs: dict[str, dict] = {}
    pooled: dict[str, tuple[float, float, int]] = {}
    if crossfit:
        done = {}
        for tag, run in runs.items():
            if run.records is None:
                done[tag], chosen_runs[tag] = run, {}
                continue
            fitted = [run.records[c] for c, r in enumerate(run.report) if r.skipped is None and c in run.records]
            table = crossfit_table(fitted, METRICS[config.judged_by], config.selection_alphas,
                                   config.selection_folds) if fitted else None
            done[tag], chosen_runs[tag] = _crossfit(run, config, table)
        runs = done
        for tag, run in runs.items():
            fitted = [r for r in run.report if r.skipped is None and r.oof_gain is not None]
            if not fitted:
                post[tag] = {}
                continue
            p = posterior_gains(np.array([r.oof_gain for r in fitted]), np.array([r.gain_se for r in fitted]))
            post[tag] = {r.index: (float(m), float(s), float(q)) for r, m, s, q in
                         zip(fitted, p.mean, p.sd, p.prob_positive)}
            pooled[tag] = (p.prior_mean, p.prior_sd, len(fitted))
    new_w, new_b = weight0.clone(), bias0.clone()
    report = []
    # each crossfit run (variant, or variant and uncertain-label policy) offers every category a candidate: the
    # confidence asked of the best is raised for their number (Bonferroni), so that offering more candidates
    # does not keep more noise
    n_offers = sum(1 for run in original_runs.values() if run.records is not None) if crossfit else 1
    needed = 1.0 - (1.0 - config.selection_confidence) / max(1, n_offers)
    for c in range(n_cat):
        raw = {tag: run.report[c] for tag, run in runs.items()}
        fitted = {tag: r for tag, r in raw.items() if r.skipped is None}
        best_tag, best_key = None, None
        for tag, r in fitted.items():
            if r.best_step <= 0:  # the candidate is the trained row
                continue
            if crossfit:
                mean, _, prob = post[tag].get(c, (float("nan"),) * 3)
                if not prob >= needed:
                    continue
                key = mean
            else:
                key = r.best_score
            if best_key is None or key > best_key:
                best_tag, best_key = tag, key
        base = fitted.get(best_tag) if best_tag else next(iter(fitted.values()), next(iter(raw.values())))
        chosen = dataclasses.replace(base)
        if len(runs) > 1:
            chosen.candidates = {tag: _candidate_summary(r, post.get(tag, {}).get(c)) for tag, r in raw.items()}
        if crossfit and best_tag is None and fitted:
            tag0 = next(iter(fitted))
            if c in post.get(tag0, {}):
                chosen.posterior_gain, _, chosen.p_gain = post[tag0][c]
        if best_tag is not None:
            new_w[c] = runs[best_tag].weight[c]
            new_b[c] = runs[best_tag].bias[c]
            chosen.variant, chosen.policy = _split_tag(best_tag)
            if crossfit:
                chosen.posterior_gain, _, chosen.p_gain = post[best_tag][c]
        else:
            chosen.variant, chosen.policy, chosen.detail = "original", None, None
            if chosen.skipped is None:
                chosen.best_score, chosen.best_step, chosen.alpha = chosen.original_score, 0, 0.0
        chosen.reason = _reason(chosen, best_tag, fitted, post, needed, c, pooled, config.selection_rule)
        report.append(chosen)
    extra = {"crossfit": chosen_runs} if chosen_runs else {}
    return CFTResult(new_w, new_b, report, config, protocol, extra=extra, runs=dict(original_runs))


def _candidate_summary(r: CategoryReport, posterior) -> dict:
    out = {"selection_score": r.best_score if r.skipped is None else None, "step": r.best_step}
    if r.oof_gain is not None and r.skipped is None:
        out.update({"crossfit_gain": r.oof_gain, "gain_se": r.gain_se, "alpha": r.alpha})
    if posterior is not None:
        out.update({"posterior_gain": posterior[0], "p_gain": posterior[2]})
    return out


def _shown(tag: str) -> str:
    return tag


def _reason(r: CategoryReport, best_tag: str | None, fitted: dict, post: dict, needed: float, c: int,
            pooled: dict, rule: str) -> str:
    if r.skipped is not None:
        return f"kept: {r.skipped}"
    if rule == "strict":
        if best_tag is None:
            return "kept: no candidate scored strictly higher than the trained row on the selection labels (strict)"
        return (f"replaced by {best_tag}: selection score {_pts(r.best_score - r.original_score)} points above the "
                "trained row (strict rule: best of the trajectory, not judged out of fold)")
    if best_tag is not None:
        mu, tau, n = pooled.get(best_tag, (float("nan"), float("nan"), 0))
        across = f"; it gains {_pts(mu)} points on average over {n} categories (spread {100 * tau:.2f})" \
            if n >= 3 else ""
        return (f"replaced by {_shown(best_tag)}: cross-fitted gain {_pts(r.oof_gain)} ± "
                f"{100 * 1.96 * r.gain_se:.2f} points here{across}; pooled P(gain > 0) = {r.p_gain:.3f} >= "
                f"{needed:g}, α = {r.alpha:g}")
    moved = [t for t, x in fitted.items() if x.best_step > 0]
    if not moved:
        return "kept: no candidate scored higher than the trained row on the selection labels"
    parts = []
    for t in moved:
        x = fitted[t]
        p = post.get(t, {}).get(c)
        prob = f"{p[2]:.2f}" if p is not None and not math.isnan(p[2]) else "–"
        parts.append(f"{_shown(t)}: gain {_pts(x.oof_gain)} ± {100 * 1.96 * x.gain_se:.2f}, P = {prob}")
    return (f"kept: no candidate's pooled P(gain > 0) reached {needed:g} ("
            + "; ".join(parts) + ")")


def merge_shards(parts: list[CFTResult], weight0: torch.Tensor, bias0: torch.Tensor) -> CFTResult:
    """One result from the shards of a run: each category's candidates from the shard that ran it, decided again."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    runs = {}
    for tag, run in first.runs.items():
        w, b = run.weight.clone(), run.bias.clone()
        report, records = [], {} if run.records is not None else None
        for c in range(len(run.report)):
            owner = next((p.runs[tag] for p in parts if p.runs[tag].report[c].skipped != IN_ANOTHER_SHARD), run)
            w[c], b[c] = owner.weight[c], owner.bias[c]
            report.append(owner.report[c])
            if records is not None and c in (owner.records or {}):
                records[c] = owner.records[c]
        runs[tag] = Run(w, b, report, run.variant, records)
    w0 = torch.as_tensor(weight0).to(first.weight.dtype)
    b0 = torch.as_tensor(bias0).to(first.bias.dtype)
    return decide(runs, w0, b0, first.config, first.selection)
