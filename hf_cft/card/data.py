"""What the model card of a calibrated model says: :class:`CFTModelCardData`, a ``huggingface_hub.ModelCardData``.

As setfit's ``SetFitModelCardData``: the object is filled while the model is made (``CFTHead.apply`` sets the
result, ``CFTHead.evaluate`` the scores, the keywords of ``save_pretrained`` / ``push_to_hub`` the rest);
:meth:`CFTModelCardData.to_dict` gives the template's variables and :meth:`CFTModelCardData.to_yaml` the card's
metadata block (``ModelCard.from_template`` reads both).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from ..constants import CALIBRATION_PLOT_NAME, CFT_REPORT_NAME, GAINS_PLOT_NAME, PER_CATEGORY_CSV_NAME
from ..decisions import DECISIONS_KEY, result_thresholds
from ..engine.variants import AUTO, VARIANTS
from .plot import METRIC_LABELS, plotted_gains

logger = logging.getLogger(__name__)

__all__ = ["CARD_FIELDS", "CARD_ROWS_ALL", "CARD_ROWS_EACH_END", "CROSSFIT_CARD_FIELDS", "CFTModelCardData",
           "card_hyperparameters", "card_table_rows", "skip_reasons"]

# CFTConfig fields every card lists; a variant adds its own (hf_cft.engine.variants), crossfit its settings
CARD_FIELDS = ("variant", "metric", "seed", "selection_fraction", "patience", "selection_rule")
CROSSFIT_CARD_FIELDS = ("selection_metric", "selection_alphas", "selection_bootstrap", "selection_confidence")
_METRIC_NAMES = {"map": ("mAP", "mean average precision (known labels)"),
                 "mauc": ("mAUC", "mean AUROC (known labels)"),
                 "f1_macro": ("macro-F1", "macro F1 at the saved per-category thresholds (known labels)"),
                 "ece": ("ECE", "macro expected calibration error, 15 bins (known labels; lower is better)"),
                 "brier": ("Brier", "macro Brier score (known labels; lower is better)")}
CARD_ROWS_ALL = 50  # up to this many categories the card's table lists them all
CARD_ROWS_EACH_END = 20  # above: the largest gains and the largest losses, this many each
_VERSIONED = ("hf_cft", "torch", "transformers", "timm", "datasets", "accelerate", "huggingface-hub")


@dataclass
class CFTModelCardData(ModelCardData):
    """What the model card of a calibrated model says.

    Given by the user (keywords of ``CFTHead.save_pretrained`` / ``push_to_hub``): ``repo_id``, ``base_model``,
    ``dataset_name``, ``tags``, ``selection_on_eval``, ``evaluation``. Filled automatically: ``library`` and
    ``base_model`` (where the head was loaded from) by :class:`~hf_cft.head.CFTHead`, ``result`` by
    ``CFTHead.apply``, ``evaluation`` by ``CFTHead.evaluate(dataset, result)``, ``folder_name`` by the save.

    Attributes:
        repo_id: the Hub id the card's usage snippet names (default: the folder's name).
        base_model: the model CFT was applied to (a Hub id or a folder; only a Hub id goes into the metadata).
        dataset_name: the dataset the rows were fitted on.
        tags: extra Hub tags.
        selection_on_eval: say plainly that rows were selected on the evaluation split.
        evaluation: ``{split: {"before": {"map": …, "per_category_ap": …}, "after": {…}}}`` (with the
            decisions' figures: ``f1_macro``, ``ece``, ``brier``, their per-category lists, ``reliability`` and
            ``gain_intervals`` of the split, when the recipe computed them).
        license: the model's license (default: the base model card's, when it has one).
        library: "transformers" or "timm".
        result: the applied :class:`~hf_cft.engine.CFTResult` (None: no card is written).
        folder_name: the name of the folder the card is saved in (names the model without ``repo_id``).
    """

    repo_id: str | None = None
    base_model: str | None = None
    dataset_name: str | None = None
    tags: list[str] = field(default_factory=list)
    selection_on_eval: bool = False
    evaluation: dict[str, dict[str, Any]] = field(default_factory=dict)
    license: str | None = None
    library: str = "transformers"
    result: Any = None
    folder_name: str | None = None

    USER_FIELDS = ("repo_id", "base_model", "dataset_name", "tags", "selection_on_eval", "evaluation", "license")

    def updated(self, **values) -> CFTModelCardData:
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
                if scores.get("after", {}).get(key) is not None:
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

    @property
    def card_repo_id(self) -> str:
        """The Hub id the card names: ``repo_id``, else the folder's name, else "model"."""
        return self.repo_id or self.folder_name or "model"

    def first_evaluation(self) -> dict:
        """The first evaluated split's figures (empty without one)."""
        return next(iter(self.evaluation.values()), {})

    def plot_caption(self) -> str:
        """What the gains plot shows: its metric and split, and the metric the rows were chosen by."""
        after, before = self.per_category_scores()
        _, metric, split = plotted_gains(self.result, after, before)
        where = f"the {next(iter(self.evaluation))} split" if split == "evaluation" else "the selection split"
        chosen = self.result.config.judged_by
        return (f"Change in {METRIC_LABELS.get(metric, metric)} per category (points) on {where}, from before to "
                f"after CFT, bars sorted by gain; the rows were chosen by "
                f"{METRIC_LABELS.get(chosen, chosen)} on the selection split."
                + (" Whiskers: 95% paired-bootstrap intervals over the split's images (the categories with the "
                   "largest changes)." if self.first_evaluation().get("gain_intervals") and split == "evaluation"
                   else ""))

    def metadata(self) -> ModelCardData:
        """The card's metadata block (the YAML front matter) as a plain ``ModelCardData``.

        Its ``model-index`` holds this model's own results only (after CFT): the Hub reads every entry as a result
        of the model. The before / after comparison is the card's text table.
        """
        eval_results = [
            EvalResult(task_type="image-classification", dataset_type=self.dataset_name or "custom",
                       dataset_name=self.dataset_name or "custom", dataset_split=row["split"],
                       metric_type=row["key"], metric_name=_METRIC_NAMES[row["key"]][1],
                       metric_value=round(100 * row["after"], 4))
            for row in self.eval_rows()
        ]
        base = self.base_model
        return ModelCardData(
            model_name=self.card_repo_id.split("/")[-1],
            base_model=base if base and not os.path.exists(base) else None,  # a Hub id, not a folder
            datasets=[self.dataset_name] if self.dataset_name else None, library_name=self.library,
            license=self.license, pipeline_tag="image-classification",
            tags=["hf_cft", "multi-label-classification", "partial-labels", *self.tags],
            eval_results=eval_results or None,
        )

    def to_yaml(self, line_break=None, original_order: list[str] | None = None) -> str:
        """The metadata block as YAML (see :meth:`metadata`)."""
        return self.metadata().to_yaml(line_break=line_break, original_order=original_order)

    def to_dict(self) -> dict[str, Any]:
        """The variables of the card template (``model_cards/cft_model_card.md``)."""
        result = self.result
        if result is None:
            raise ValueError("a model card needs the applied CFTResult (CFTModelCardData.result)")
        summary = result.summary()
        rows = card_table_rows(result)
        return {
            "model_name": self.card_repo_id.split("/")[-1],
            "repo_id": self.card_repo_id,
            "base_model": self.base_model,  # a Hub id, or the folder as the user named it (never its last part)
            "dataset_name": self.dataset_name,
            "variant": result.config.variant,
            "rule": result.config.selection_rule,
            "eval_rows": self.eval_rows(),
            "changed": summary["changed"],
            "n_categories": summary["categories"],
            "skipped": summary["skipped"],
            "skip_reasons": skip_reasons(result),
            "selection": result.selection[0].upper() + result.selection[1:] if result.selection else "",
            "selection_on_eval": self.selection_on_eval,
            "per_category": result.to_markdown(rows),
            "per_category_listed": len(result.report) if rows is None else len(rows),
            "rows_each_end": CARD_ROWS_EACH_END,
            "report_name": CFT_REPORT_NAME,
            "gains_plot": GAINS_PLOT_NAME,
            "plot_caption": self.plot_caption(),
            "calibration_plot": CALIBRATION_PLOT_NAME if self.first_evaluation().get("reliability") else None,
            "per_category_csv": PER_CATEGORY_CSV_NAME,
            "thresholds": result_thresholds(result) is not None,
            "decisions": (result.extra or {}).get(DECISIONS_KEY, {}),
            "hyperparameters": card_hyperparameters(result.config),
            "versions": framework_versions(),
        }


def card_hyperparameters(config) -> dict[str, Any]:
    """The CFTConfig settings a card lists: the common ones and those of the variants that ran."""
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


def card_table_rows(result) -> list[int] | None:
    """The categories the card's table lists: all (None) up to :data:`CARD_ROWS_ALL`; above, positions in the
    report of the :data:`CARD_ROWS_EACH_END` largest gains (largest first), then of as many largest losses (on the
    selection split; a category without a gain counts 0)."""
    if len(result.report) <= CARD_ROWS_ALL:
        return None
    gains = [r.gain or 0.0 for r in result.report]
    order = sorted(range(len(gains)), key=lambda i: (-gains[i], i))
    return order[:CARD_ROWS_EACH_END] + order[-CARD_ROWS_EACH_END:]


def skip_reasons(result) -> list[tuple[str, int]]:
    """``(reason, count)`` of the categories ``result`` skipped, most frequent first (ties in first-seen order)."""
    return Counter(str(r.skipped) for r in result.report if r.skipped is not None).most_common()


def framework_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
