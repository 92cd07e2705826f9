"""The model card and the calibration files of a calibrated model folder.

:func:`render_card` fills the Jinja template ``model_cards/cft_model_card.md`` (shipped as ``hf_cft.model_cards``)
from a :class:`~hf_cft.card.data.CFTModelCardData`; :func:`calibration_files` gives every file that an applied
result adds to a model folder (config, report, gains plot, card), for :func:`hf_cft.modeling.save.save_model`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from importlib import resources

from huggingface_hub import ModelCard

from ..constants import (
    CALIBRATION_PLOT_NAME,
    CFT_CONFIG_NAME,
    CFT_REPORT_NAME,
    GAINS_PLOT_NAME,
    MODEL_CARD_NAME,
    PER_CATEGORY_CSV_NAME,
)
from ..modeling.save import ExtraFile
from .data import CFTModelCardData
from .per_category import per_category_csv
from .plot import gains_plot_png, reliability_plot_png

logger = logging.getLogger(__name__)

__all__ = ["TEMPLATE_NAME", "calibration_files", "render_card", "template_path"]

TEMPLATE_NAME = "cft_model_card.md"


def template_path() -> str:
    """The card template: ``model_cards/cft_model_card.md`` of the source tree, shipped as ``hf_cft.model_cards``."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    source = os.path.join(root, "model_cards", TEMPLATE_NAME)
    if os.path.exists(source):  # a source checkout or an editable install
        return source
    return str(resources.files("hf_cft.model_cards") / TEMPLATE_NAME)


def render_card(data: CFTModelCardData, model_name: str | None = None) -> ModelCard:
    """A ``huggingface_hub.ModelCard`` from card data that hold a result (``model_name``: the folder's name)."""
    if model_name is not None:
        data = replace(data, folder_name=model_name)
    return ModelCard.from_template(data, template_path=template_path())


def calibration_files(data: CFTModelCardData, model_name: str) -> dict[str, ExtraFile]:
    """The files an applied result (``data.result``) adds to the model folder ``model_name``, by name.

    ``cft_config.json``, ``cft_report.json``, the gains plot (on the first evaluated split, else the selection
    split), ``per_category.csv``, the reliability diagram (when the evaluation has its bins) and the model card
    (``README.md``).
    """
    result = data.result
    after, before = data.per_category_scores()
    first = data.first_evaluation()
    files = {
        CFT_CONFIG_NAME: lambda path: result.config.save_pretrained(os.path.dirname(path)),
        CFT_REPORT_NAME: result.to_json,
        GAINS_PLOT_NAME: gains_plot_png(result, after, before, first.get("gain_intervals")),
        PER_CATEGORY_CSV_NAME: per_category_csv(data),
        MODEL_CARD_NAME: render_card(data, model_name).save,
    }
    if first.get("reliability"):
        files[CALIBRATION_PLOT_NAME] = reliability_plot_png(first["reliability"], next(iter(data.evaluation)))
    return files
