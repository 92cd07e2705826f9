"""The model card of a calibrated model: what it says (:class:`CFTModelCardData`), its template, its files.

Where to add a card field: a dataclass field on :class:`CFTModelCardData` (and its name in ``USER_FIELDS`` when
the user gives it), its template variable in :meth:`CFTModelCardData.to_dict`, and its use in the template
``model_cards/cft_model_card.md``; metadata for the Hub go into :meth:`CFTModelCardData.metadata`.
"""

from .baseline import baseline_card
from .data import (
    CARD_FIELDS,
    CARD_ROWS_ALL,
    CARD_ROWS_EACH_END,
    CROSSFIT_CARD_FIELDS,
    CFTModelCardData,
    card_hyperparameters,
    card_table_rows,
    skip_reasons,
)
from .merge import CARD_END, CARD_START, merge_cards
from .plot import gains_plot_png, plotted_gains
from .render import TEMPLATE_NAME, calibration_files, render_card, template_path

__all__ = ["CARD_END", "CARD_FIELDS", "CARD_ROWS_ALL", "CARD_ROWS_EACH_END", "CARD_START", "CROSSFIT_CARD_FIELDS",
           "TEMPLATE_NAME", "CFTModelCardData", "baseline_card", "calibration_files", "card_hyperparameters",
           "card_table_rows",
           "gains_plot_png", "merge_cards", "plotted_gains", "render_card", "skip_reasons", "template_path"]
