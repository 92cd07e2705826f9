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
from ..metrics.ranking import METRICS
from .config import CFTConfig
from .crossfit import choose_crossfit, posterior_gains
from .registry import VARIANTS
from .result import CategoryReport, CFTResult

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
    guard: dict[int, tuple[float, float]] | None = None  # crossfit: each category's gain and SE in `metric`


def _crossfit(run: Run, config: CFTConfig) -> tuple[Run, dict]:
    """The run with its candidates chosen by the crossfit rule (step and α shared by the categories, each
    category's judged without its own labels), with out-of-fold gains."""
    fitted = [c for c, r in enumerate(run.report) if r.skipped is None and c in (run.records or {})]
    report = [dataclasses.replace(r) for r in run.report]
    w, b = run.weight.clone(), run.bias.clone()
    if not fitted:
        return Run(w, b, report, run.variant), {}
    choice = choose_crossfit([run.records[c] for c in fitted], METRICS[config.judged_by], config.selection_alphas,
                             config.selection_folds, config.selection_bootstrap, config.seed,
                             guard=METRICS[config.metric])
    for j, c in enumerate(fitted):
        r = report[c]
        step = choice.step[j]
        w[c], b[c] = choice.weight[j].to(w.dtype), choice.bias[j].to(b.dtype)
        r.best_step, r.alpha = step, choice.alpha[j]
        r.best_score = float(choice.score[j])
        r.oof_gain, r.gain_se = float(choice.oof_gain[j]), float(choice.gain_se[j])
        r.variant = run.variant if step > 0 else "original"
        r.detail = _describe(run.variant, config, step)
    summary = {"mean_crossfit_gain": float(choice.oof_gain.nanmean())}
    step, alpha = choice.overall
    summary.update({"step": step, "alpha": alpha, "held_out": "categories" if choice.by_category else "image folds"})
    if choice.by_category:  # categories whose choice without their own labels differs from the overall one
        summary["other_choices"] = {str(choice.index[j]): {"step": choice.step[j], "alpha": choice.alpha[j]}
                                    for j in range(len(fitted)) if (choice.step[j], choice.alpha[j]) != (step, alpha)}
    else:
        summary["fold_choices"] = [{"step": g, "alpha": a} for g, a in choice.fold_choices[0]]
    checked = None
    if choice.guard_gain is not None:
        checked = {c: (float(choice.guard_gain[j]), float(choice.guard_se[j])) for j, c in enumerate(fitted)}
    return Run(w, b, report, run.variant, run.records, checked), summary


def _describe(variant: str, config: CFTConfig, step: int) -> str | None:
    """The report's detail of a kept step of ``variant`` (None for the joint choice or an unknown variant)."""
    if variant not in VARIANTS or variant not in config.options:
        return None
    return VARIANTS[variant].describe(config.options[variant], step)


def _split_tag(tag: str) -> tuple[str, str | None]:
    variant, _, policy = tag.partition("/")
    return variant, policy or None


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


JOINT = "joint"  # the crossfit choice made over the candidates of several runs at once


def _joint_records(runs: dict[str, Run]) -> tuple[dict[int, dict], list[tuple[str, int]]] | None:
    """The candidates of every run with records, as one trajectory per category (categories fitted in all of
    them on the same selection labels), and each joint grid index's (run, step); None with fewer than 2 runs."""
    tags = [t for t, run in runs.items() if run.records is not None]
    if len(tags) < 2 or len(tags) < len(runs):  # a run without candidates (rebuilt from JSON) keeps its rows
        return None
    first = runs[tags[0]].records

    def same(c: int) -> bool:  # the same selection labels, listed the same way, in every run
        if any(c not in runs[t].records or runs[t].report[c].skipped is not None for t in tags):
            return False
        return all(int(runs[t].records[c]["n_pos"]) == int(first[c]["n_pos"])
                   and torch.equal(runs[t].records[c]["folds"], first[c]["folds"])
                   and torch.allclose(runs[t].records[c]["listed"][0], first[c]["listed"][0], rtol=1e-4, atol=1e-5)
                   for t in tags)

    cats = [c for c in first if same(c)]
    if not cats:
        return None
    origin = [(t, int(s)) for t in tags for s in runs[t].records[cats[0]]["grid_step"]]
    records = {}
    for c in cats:
        rs = [runs[t].records[c] for t in tags]
        records[c] = {**rs[0], "grid_weight": torch.cat([r["grid_weight"] for r in rs]),
                      "grid_bias": torch.cat([r["grid_bias"] for r in rs]),
                      "grid_step": torch.arange(1, len(origin) + 1),
                      "listed": torch.cat([rs[0]["listed"][:1]] + [r["listed"][1:] for r in rs])}
    return records, origin


def _joint(runs: dict[str, Run], config: CFTConfig) -> tuple[Run, dict, dict, tuple, dict | None] | None:
    """The crossfit rule over every run's candidates at once: one (run, step, α) per variant set, each category's
    chosen on the other categories' labels; the run, its summary, the posteriors, the pooled gain and the guard's
    pooled means."""
    joint = _joint_records(runs)
    if joint is None:
        return None
    records, origin = joint
    base = runs[origin[0][0]]
    report = [dataclasses.replace(r, skipped=r.skipped if c in records else "no joint candidates")
              for c, r in enumerate(base.report)]
    run, summary = _crossfit(Run(base.weight, base.bias, report, JOINT, records), config)
    for c in records:
        r = run.report[c]
        if r.best_step > 0:
            tag, step = origin[r.best_step - 1]
            r.variant, r.policy = _split_tag(tag)
            r.best_step = step
            r.detail = _describe(r.variant, config, step)
            r.note = runs[tag].report[c].note
        else:
            r.note = None
    if summary.get("step"):
        tag, step = origin[summary["step"] - 1]
        summary["step"], summary["run"] = step, tag
    for choice in [*summary.get("other_choices", {}).values(), *summary.get("fold_choices", [])]:
        if choice["step"]:
            choice["run"], choice["step"] = origin[choice["step"] - 1]
    fitted = [run.report[c] for c in sorted(records)]
    post, pooled = _pool(fitted)
    return run, summary, post, pooled, _guard_means(run, fitted)


def _pool(reports: list[CategoryReport], gains: dict | None = None) -> tuple[dict, tuple]:
    """Posterior (mean, sd, P(gain > 0)) of each fitted category's gain, pooled, and the pooled (μ, τ, n).
    ``gains``: index → (gain, SE) to pool instead of the reports' cross-fitted ones. (Every fitted category has
    a known positive and a known negative among its selection labels: the engine skips the others.)"""
    pairs = np.array([gains[r.index] if gains is not None else (r.oof_gain, r.gain_se) for r in reports])
    p = posterior_gains(pairs[:, 0], pairs[:, 1])
    post = {r.index: (float(m), float(s), float(q)) for r, m, s, q in zip(reports, p.mean, p.sd, p.prob_positive)}
    return post, (p.prior_mean, p.prior_sd, len(reports))


def _guard_means(run: Run, reports: list[CategoryReport]) -> dict[int, float] | None:
    """Each category's pooled posterior mean gain in `metric` (None: rows are selected by `metric` itself)."""
    if run.guard is None:
        return None
    return {c: post[0] for c, post in _pool(reports, run.guard)[0].items()}


def _guard_ok(means: dict[int, float] | None, c: int) -> bool:
    """The candidate does not lower `metric` on the evidence (its pooled mean gain there is not negative)."""
    return means is None or means[c] >= 0.0


@dataclasses.dataclass
class _Evidence:
    """The crossfit rule's evidence over the runs: each run decided alone (``runs``), the posterior of each
    category's gain per run, each run's crossfit summary, pooled (μ, τ, n) and the guard's pooled means."""

    runs: dict[str, Run]
    post: dict[str, dict[int, tuple[float, float, float]]] = dataclasses.field(default_factory=dict)
    chosen: dict[str, dict] = dataclasses.field(default_factory=dict)
    pooled: dict[str, tuple[float, float, int]] = dataclasses.field(default_factory=dict)
    guards: dict[str, dict[int, float] | None] = dataclasses.field(default_factory=dict)
    needed: float = 0.0  # the posterior probability of a gain asked of the best of a category's candidates


def _evidence(runs: dict[str, Run], config: CFTConfig) -> _Evidence:
    """Under the crossfit rule, each run's candidates chosen and their gains pooled; under the strict rule, the
    runs as they are."""
    if config.selection_rule != "crossfit":
        return _Evidence(runs, needed=1.0 - (1.0 - config.selection_confidence))
    ev = _Evidence({})
    for tag, run in runs.items():
        if run.records is None:
            ev.runs[tag], ev.chosen[tag] = run, {}
            continue
        ev.runs[tag], ev.chosen[tag] = _crossfit(run, config)
    for tag, run in ev.runs.items():
        fitted = [r for r in run.report if r.skipped is None and r.oof_gain is not None]
        if not fitted:
            ev.post[tag] = {}
            continue
        ev.post[tag], ev.pooled[tag] = _pool(fitted)
        ev.guards[tag] = _guard_means(run, fitted)
    # a category outside a joint choice gets a candidate from each run, and the confidence asked of the best is
    # raised for their number (Bonferroni), so that more candidates do not keep more noise
    n_offers = sum(1 for run in runs.values() if run.records is not None)
    ev.needed = 1.0 - (1.0 - config.selection_confidence) / max(1, n_offers)
    return ev


def decide(runs: dict[str, Run], weight0: torch.Tensor, bias0: torch.Tensor, config: CFTConfig,
           protocol: str) -> CFTResult:
    """Per category: the trained row, or one run's candidate, by ``config.selection_rule``."""
    crossfit = config.selection_rule == "crossfit"
    ev = _evidence(runs, config)
    new_w, new_b = weight0.clone(), bias0.clone()
    report = []
    # several runs: one joint choice among all their candidates, judged like a single run's
    joint = _joint(runs, config) if crossfit else None
    if joint is not None:
        ev.chosen[JOINT] = joint[1]
    for c in range(weight0.shape[0]):
        if joint is not None and joint[0].report[c].skipped is None:
            report.append(_decide_joint(c, joint, ev.runs, ev.post, config, new_w, new_b))
        else:
            report.append(_decide_alone(c, ev, config, new_w, new_b))
    extra = {"crossfit": ev.chosen} if ev.chosen else {}
    judged = _judged(ev.runs, joint, new_w, new_b) if crossfit else None
    return CFTResult(new_w, new_b, report, config, protocol, extra=extra, runs=dict(runs), judged=judged)


def _best_run(c: int, fitted: dict[str, CategoryReport], ev: _Evidence, crossfit: bool) -> str | None:
    """The run whose candidate replaces category ``c``'s row (crossfit: credible and the highest posterior mean
    gain; strict: the best selection score), or None."""
    best_tag, best_key = None, None
    for tag, r in fitted.items():
        if r.best_step <= 0:  # the candidate is the trained row
            continue
        if crossfit:
            mean, _, prob = ev.post[tag].get(c, (float("nan"),) * 3)
            if not prob >= ev.needed or not _guard_ok(ev.guards.get(tag), c):
                continue
            key = mean
        else:
            key = r.best_score
        if best_key is None or key > best_key:
            best_tag, best_key = tag, key
    return best_tag


def _decide_alone(c: int, ev: _Evidence, config: CFTConfig, new_w: torch.Tensor,
                  new_b: torch.Tensor) -> CategoryReport:
    """Category ``c`` decided run by run: the best credible candidate of any run, or the trained row."""
    crossfit = config.selection_rule == "crossfit"
    runs, post = ev.runs, ev.post
    raw = {tag: run.report[c] for tag, run in runs.items()}
    fitted = {tag: r for tag, r in raw.items() if r.skipped is None}
    best_tag = _best_run(c, fitted, ev, crossfit)
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
        _keep(chosen)
    chosen.reason = _reason(chosen, best_tag, fitted, post, ev.needed, c, ev.pooled, config.selection_rule)
    return chosen


def _judged(runs: dict[str, Run], joint: tuple | None, new_w: torch.Tensor,
            new_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The row each category's crossfit evidence is about: the joint candidate, the single run's candidate, or
    (decided run by run) the row written."""
    w, b = new_w.clone(), new_b.clone()
    if joint is not None:
        run = joint[0]
        for c, r in enumerate(run.report):
            if r.skipped is None:
                w[c], b[c] = run.weight[c], run.bias[c]
    elif len(runs) == 1:
        run = next(iter(runs.values()))
        for c, r in enumerate(run.report):
            if r.skipped is None and r.oof_gain is not None:
                w[c], b[c] = run.weight[c], run.bias[c]
    return w, b


def _decide_joint(c: int, joint: tuple, runs: dict[str, Run], post: dict, config: CFTConfig, new_w: torch.Tensor,
                  new_b: torch.Tensor) -> CategoryReport:
    """Category ``c`` under the joint choice: replaced by its candidate where the pooled P(gain > 0) reaches
    ``selection_confidence``; every run's own evidence listed among the candidates."""
    run, _, jpost, (mu, tau, n), guard = joint
    r = dataclasses.replace(run.report[c])
    r.candidates = {tag: _candidate_summary(x.report[c], post.get(tag, {}).get(c)) for tag, x in runs.items()}
    r.posterior_gain, _, r.p_gain = jpost[c]
    names = ", ".join(runs)
    evidence = (f"cross-fitted gain {_pts(r.oof_gain)} ± {100 * 1.96 * r.gain_se:.2f} points here; the joint choice "
                f"among {names} gains {_pts(mu)} points on average over {n} categories (spread {100 * tau:.2f})"
                if n >= 3 else f"cross-fitted gain {_pts(r.oof_gain)} ± {100 * 1.96 * r.gain_se:.2f} points")
    credible = r.best_step > 0 and r.p_gain >= config.selection_confidence
    if credible and _guard_ok(guard, c):
        new_w[c], new_b[c] = run.weight[c], run.bias[c]
        shown = r.variant + (f"/{r.policy}" if r.policy else "")
        r.reason = (f"replaced by {shown} ({r.detail}), chosen among {names} on the other categories' labels: "
                    f"{evidence}; pooled P(gain > 0) = {r.p_gain:.3f} >= {config.selection_confidence:g}, "
                    f"α = {r.alpha:g}")
        return r
    kept = f"kept: the joint choice among {names} ({r.variant}, {r.detail}, α = {r.alpha:g}) has {evidence}; " \
        f"pooled P(gain > 0) = {r.p_gain:.3f}"
    if credible:
        r.reason = (f"{kept}, but its {config.metric.upper()} gain here, pooled, is {_pts(guard[c])} points: no row "
                    "is replaced where the reported metric would fall")
    elif r.best_step > 0:
        r.reason = f"{kept} < {config.selection_confidence:g}"
    else:
        r.reason = f"kept: the joint choice among {names} made without this category's labels is the trained row"
    return _keep(r)


def _keep(r: CategoryReport) -> CategoryReport:
    """``r`` as a kept trained row (its selection score, step 0, α 0 where it was fitted)."""
    r.variant, r.policy, r.detail = "original", None, None
    if r.skipped is None:
        r.best_score, r.best_step, r.alpha = r.original_score, 0, 0.0
    return r


def _candidate_summary(r: CategoryReport, posterior) -> dict:
    out = {"selection_score": r.best_score if r.skipped is None else None, "step": r.best_step}
    if r.note:
        out["note"] = r.note
    if r.oof_gain is not None and r.skipped is None:
        out.update({"crossfit_gain": r.oof_gain, "gain_se": r.gain_se, "alpha": r.alpha})
    if posterior is not None:
        out.update({"posterior_gain": posterior[0], "p_gain": posterior[2]})
    return out


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
        return (f"replaced by {best_tag}: cross-fitted gain {_pts(r.oof_gain)} ± "
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
        parts.append(f"{t}: gain {_pts(x.oof_gain)} ± {100 * 1.96 * x.gain_se:.2f}, P = {prob}")
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
