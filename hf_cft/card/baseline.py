"""The model card of a baseline the trainer trained (``README.md`` beside its best model): what it is, its own
results only in the ``model-index``, and how to calibrate it with CFT."""

from __future__ import annotations

import logging
import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .data import framework_versions
from .render import template_path

logger = logging.getLogger(__name__)

__all__ = ["BASELINE_TEMPLATE_NAME", "METHOD_TEXT", "baseline_card"]

BASELINE_TEMPLATE_NAME = "baseline_model_card.md"
METHOD_TEXT = {
    "an": ("Assume Negative", "every unknown label was taught as a negative."),
    "ignore": ("ignore", "only the known labels counted in the loss."),
    "ll_r": ("LL-R (large loss rejection)", "Assume Negative, with the largest losses of unknown labels rejected, "
                                            "more each epoch."),
    "selective": ("Selective", "unknown labels of common classes and each batch's likeliest unknowns were "
                               "ignored, the rest taught as negatives."),
    "cl": ("Curriculum Labeling", "pseudo-labels were given to unknown labels over the epochs."),
}


def baseline_card(report: dict, method: str, repo_id: str, n_categories: int, license: str | None = None
                  ) -> ModelCard:
    """The card of a trained baseline from its ``train_report.json`` content (the report split's scores in the
    ``model-index``)."""
    split = next((k for k in ("test", "validation") if isinstance(report.get(k), dict) and "map" in report[k]), None)
    rows = [] if split is None else [{"split": split, "metric": name, "key": key, "value": report[split][key]}
                                     for key, name in (("map", "mAP"), ("mauc", "mAUC"))]
    dataset = report.get("dataset") or "custom"
    data = ModelCardData(
        model_name=repo_id.split("/")[-1], datasets=[dataset], library_name="transformers", license=license,
        pipeline_tag="image-classification", tags=["hf_cft", "multi-label-classification", "partial-labels",
                                                   f"hf_cft-{method}"],
        eval_results=[EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=dataset,
                                 dataset_split=r["split"], metric_type=r["key"],
                                 metric_name=f"{r['metric']} (known labels)", metric_value=round(100 * r["value"], 4))
                      for r in rows] or None)
    title, text = METHOD_TEXT.get(method, (method, ""))
    return ModelCard.from_template(
        data, template_path=os.path.join(os.path.dirname(template_path()), BASELINE_TEMPLATE_NAME),
        model_name=repo_id.split("/")[-1], repo_id=repo_id, dataset_name=dataset, method=method,
        method_title=title, method_text=text, eval_rows=rows, best_epoch=report.get("best_epoch"),
        best_validation=report.get("best_validation") or 0.0, n_validation=len(report.get("validation_rows", [])),
        n_categories=n_categories, versions=framework_versions())
