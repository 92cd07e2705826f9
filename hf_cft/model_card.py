"""Model card (from the Jinja template in ``model_cards/``) and the per-category gains plot.

:class:`CardData` holds what the card says; :func:`render_card` turns it into a ``huggingface_hub.ModelCard``.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

__all__ = ["TEMPLATE_NAME", "CardData", "card_hyperparameters", "gains_plot_png", "render_card", "render_model_card",
           "skip_reasons", "template_path"]

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


# CFTConfig fields every card lists; a variant adds its own (hf_cft.engine.variants), crossfit its settings
CARD_FIELDS = ("variant", "metric", "seed", "selection_fraction", "patience", "selection_rule")
CROSSFIT_CARD_FIELDS = ("selection_metric", "selection_alphas", "selection_bootstrap", "selection_confidence")
_METRIC_NAMES = {"map": ("mAP", "mean average precision (known labels)"),
                 "mauc": ("mAUC", "mean AUROC (known labels)")}


@dataclass
class CardData:
    """What the model card of a calibrated model says.

    Given by the user (keywords of ``CFTHead.save_pretrained`` / ``push_to_hub``): ``repo_id``, ``base_model``,
    ``dataset_name``, ``tags``, ``selection_on_eval``, ``evaluation``. Filled automatically: ``library`` and
    ``base_model`` (where the head was loaded from) by :class:`~hf_cft.head.CFTHead`, ``result`` by
    ``CFTHead.apply``, ``evaluation`` by ``CFTHead.evaluate(dataset, result)``.

    Attributes:
        repo_id: the Hub id the card's usage snippet names (default: the folder's name).
        base_model: the model CFT was applied to (a Hub id or a folder).
        dataset_name: the dataset the rows were fitted on.
        tags: extra Hub tags.
        selection_on_eval: say plainly that rows were selected on the evaluation split.
        evaluation: ``{split: {"before": {"map": …, "per_category_ap": …}, "after": {…}}}``.
        library: "transformers" or "timm".
        result: the applied :class:`~hf_cft.engine.CFTResult` (None: no card is written).
    """

    repo_id: str | None = None
    base_model: str | None = None
    dataset_name: str | None = None
    tags: list[str] = field(default_factory=list)
    selection_on_eval: bool = False
    evaluation: dict[str, dict[str, Any]] = field(default_factory=dict)
    library: str = "transformers"
    result: Any = None

    USER_FIELDS = ("repo_id", "base_model", "dataset_name", "tags", "selection_on_eval", "evaluation")

    def updated(self, **values) -> CardData:
        """A copy with the user fields given (None values are ignored); an unknown name raises."""
        unknown = sorted(set(values) - set(self.USER_FIELDS))
        if unknown:
            raise TypeError(f"unknown model card field(s) {unknown}; known: {list(self.USER_FIELDS)}")
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def eval_rows(self) -> list[dict[str, Any]]:
        """One row per split and metric with the scores before and after CFT."""
        rows = []
        for split, scores in self.evaluation.items():
            for key, (short, _) in _METRIC_NAMES.items():
                if key in scores.get("after", {}):
                    rows.append({"split": split, "metric": short, "key": key, "before": scores["before"][key],
                                 "after": scores["after"][key]})
        return rows

    def per_category_scores(self) -> tuple[list | None, list | None]:
        """Per-category scores after and before CFT on the first evaluated split (None, None without one)."""
        first = next(iter(self.evaluation.values()), None)
        if first is None or self.result is None:
            return None, None
        per = "per_category_ap" if self.result.config.metric == "ap" else "per_category_auroc"
        return first["after"][per], first["before"][per]


def card_hyperparameters(config) -> dict[str, Any]:
    """The CFTConfig settings a card lists: the common ones and those of the variants that ran."""
    from .engine.variants import AUTO, VARIANTS

    cfg = config.to_dict()
    keep = set(CARD_FIELDS)
    if config.selection_rule == "crossfit":
        keep |= set(CROSSFIT_CARD_FIELDS)
    for name in (config.auto_variants if config.variant == AUTO else [config.variant]):
        keep |= set(VARIANTS[name].hyperparameters())
    keep |= {"auto_variants"} if config.variant == AUTO else set()
    keep |= {"uncertain_policies"} if config.uncertain_policies else set()
    cfg["selection_metric"] = config.judged_by  # what rows were selected by, even where left to its default
    return {k: cfg[k] for k in sorted(keep)}


def render_card(data: CardData, model_name: str | None = None):
    """A ``huggingface_hub.ModelCard`` from a :class:`CardData` that holds a result."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    result = data.result
    if result is None:
        raise ValueError("a model card needs the applied CFTResult (CardData.result)")
    repo_id = data.repo_id or model_name or "model"
    name = repo_id.split("/")[-1]
    eval_rows = data.eval_rows()
    eval_results = [
        EvalResult(task_type="image-classification", dataset_type=data.dataset_name or "custom",
                   dataset_name=data.dataset_name or "custom", dataset_split=row["split"], metric_type=row["key"],
                   metric_name=f"{_METRIC_NAMES[row['key']][1]}, {when} CFT", metric_value=round(100 * row[when], 4))
        for row in eval_rows for when in ("before", "after")
    ]
    base = data.base_model
    hub_base = base if base and not os.path.exists(base) else None  # a Hub id, not a folder
    card_data = ModelCardData(
        model_name=name, base_model=hub_base, datasets=[data.dataset_name] if data.dataset_name else None,
        library_name=data.library, pipeline_tag="image-classification",
        tags=["hf_cft", "multi-label-classification", "partial-labels", *data.tags],
        eval_results=eval_results or None,
    )
    summary = result.summary()
    return ModelCard.from_template(
        card_data,
        template_path=template_path(),
        model_name=name,
        repo_id=repo_id,
        base_model=base,  # a Hub id, or the folder as the user named it (never just its last component)
        dataset_name=data.dataset_name,
        variant=result.config.variant,
        rule=result.config.selection_rule,
        eval_rows=eval_rows,
        changed=summary["changed"],
        n_categories=summary["categories"],
        skipped=summary["skipped"],
        skip_reasons=skip_reasons(result),
        selection=result.selection[0].upper() + result.selection[1:] if result.selection else "",
        selection_on_eval=data.selection_on_eval,
        per_category=result.to_markdown(),
        hyperparameters=card_hyperparameters(result.config),
        versions=_versions(),
    )


def skip_reasons(result) -> list[tuple[str, int]]:
    """``(reason, count)`` of the categories ``result`` skipped, most frequent first (ties in first-seen order)."""
    return Counter(str(r.skipped) for r in result.report if r.skipped is not None).most_common()


def render_model_card(result, repo_id: str, base_model: str | None = None, dataset_name: str | None = None,
                      evaluation: dict[str, dict[str, Any]] | None = None, selection_on_eval: bool = False,
                      library: str = "transformers", tags: list[str] | None = None):
    """A ``huggingface_hub.ModelCard`` for a calibrated model (see :class:`CardData` for the arguments)."""
    return render_card(CardData(repo_id=repo_id, base_model=base_model, dataset_name=dataset_name,
                                tags=list(tags or []), selection_on_eval=selection_on_eval,
                                evaluation=dict(evaluation or {}), library=library, result=result))


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
