"""Model card (from the Jinja template in ``model_cards/``) and the per-category gains plot."""

from __future__ import annotations

import io
import os
from importlib import resources
from typing import Any

__all__ = ["TEMPLATE_NAME", "gains_plot_png", "render_model_card", "template_path"]

TEMPLATE_NAME = "cft_model_card.md"


def template_path() -> str:
    """The card template: ``model_cards/cft_model_card.md`` of the source tree, shipped as ``hf_cft.model_cards``."""
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model_cards", TEMPLATE_NAME)
    if os.path.exists(source):  # a source checkout or an editable install
        return source
    return str(resources.files("hf_cft.model_cards") / TEMPLATE_NAME)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("hf_cft", "torch", "transformers", "timm", "datasets", "accelerate", "huggingface-hub"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def render_model_card(result, repo_id: str, base_model: str | None = None, dataset_name: str | None = None,
                      evaluation: dict[str, dict[str, Any]] | None = None, selection_on_eval: bool = False,
                      library: str = "transformers", tags: list[str] | None = None):
    """A ``huggingface_hub.ModelCard`` for a calibrated model.

    Args:
        result: the :class:`~hf_cft.engine.CFTResult` applied to the model.
        repo_id: the Hub id the card's usage snippet names.
        evaluation: ``{split: {"before": {"map": …}, "after": {"map": …}}}`` (see :meth:`CFTHead.evaluate`).
        selection_on_eval: say plainly that rows were selected on the evaluation split.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    eval_rows, eval_results = [], []
    metric_names = {"map": ("mAP", "mean average precision (known labels)"),
                    "mauc": ("mAUC", "mean AUROC (known labels)")}
    name = repo_id.split("/")[-1]
    for split, scores in (evaluation or {}).items():
        for key, (short, long) in metric_names.items():
            if key in scores.get("after", {}):
                before, after = scores["before"][key], scores["after"][key]
                eval_rows.append({"split": split, "metric": short, "before": before, "after": after})
                for when, value in (("before", before), ("after", after)):
                    eval_results.append(EvalResult(
                        task_type="image-classification", dataset_type=dataset_name or "custom",
                        dataset_name=dataset_name or "custom", dataset_split=split, metric_type=key,
                        metric_name=f"{long}, {when} CFT", metric_value=round(100 * value, 4),
                    ))
    hub_base = base_model if base_model and not os.path.exists(base_model) else None  # a Hub id, not a folder
    card_data = ModelCardData(
        model_name=name,
        base_model=hub_base,
        datasets=[dataset_name] if dataset_name else None,
        library_name=library,
        pipeline_tag="image-classification",
        tags=["hf_cft", "multi-label-classification", "partial-labels", *(tags or [])],
        eval_results=eval_results or None,
    )
    cfg = result.config.to_dict()
    keep = {"variant", "metric", "seed", "selection_fraction", "patience", "selection_rule"}
    if result.config.selection_rule == "crossfit":
        keep |= {"selection_folds", "selection_alphas", "selection_bootstrap", "selection_confidence"}
    variant = result.config.variant
    keep |= {"epochs", "lr", "gamma_neg", "gamma_pos", "clip", "bp_loss"} if variant in ("bp", "auto") else set()
    keep |= {"generations", "population_size", "elitism", "crossover_rate", "mutation_probability",
             "mutation_range"} if result.config.variant == "ga" else set()
    keep |= {k for k in cfg if k.startswith("pygad_")} if result.config.variant == "pygad" else set()
    keep |= {k for k in cfg if k.startswith("refit_")} if result.config.variant in ("refit", "auto") else set()
    keep |= {"auto_variants"} if result.config.variant == "auto" else set()
    keep |= {"uncertain_policies"} if result.config.uncertain_policies else set()
    summary = result.summary()
    return ModelCard.from_template(
        card_data,
        template_path=template_path(),
        model_name=name,
        repo_id=repo_id,
        base_model=base_model,  # a Hub id, or the folder as the user named it (never just its last component)
        dataset_name=dataset_name,
        variant=result.config.variant,
        rule=result.config.selection_rule,
        eval_rows=eval_rows,
        changed=summary["changed"],
        n_categories=summary["categories"],
        skipped=summary["skipped"],
        selection=result.selection[0].upper() + result.selection[1:] if result.selection else "",
        selection_on_eval=selection_on_eval,
        per_category=result.to_markdown(),
        hyperparameters={k: cfg[k] for k in sorted(keep)},
        versions=_versions(),
    )


def gains_plot_png(result, per_category_after: list[float | None] | None = None,
                   per_category_before: list[float | None] | None = None) -> bytes:
    """A bar chart of per-category gains (selection split, or an evaluation split when given) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if per_category_after is not None and per_category_before is not None:
        gains = [(a - b) if a is not None and b is not None else 0.0
                 for a, b in zip(per_category_after, per_category_before)]
        title = "per-category gain on the evaluation split"
    else:
        gains = [r.gain or 0.0 for r in result.report]
        title = "per-category gain on the selection split"
    names = [r.name or str(r.index) for r in result.report]
    width = max(6.0, min(40.0, 0.25 * len(names)))
    fig, ax = plt.subplots(figsize=(width, 3.2))
    ax.bar(range(len(gains)), [100 * g for g in gains],
           color=["#2a9d8f" if g > 0 else "#e76f51" if g < 0 else "#999999" for g in gains])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(f"{result.config.metric.upper()} gain (points)")
    ax.set_title(f"CFT-{result.config.variant}: {title}")
    if len(names) <= 100:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
