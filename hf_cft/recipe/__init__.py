"""The end-to-end CFT job behind ``hf-cft cft`` (``accelerate launch -m hf_cft.cli cft``, ``recipes/cft.py``).

Model (or a freshly trained Assume-Negative baseline) → features (cached, data parallel) → every requested
variant, categories sharded across processes and checkpointed per block → per-category ``auto`` choice
→ evaluation before / after on the evaluation split → calibrated model, report, plot and card in
``output_dir`` (→ the Hub).

Layout: :mod:`.arguments` (the command line), :mod:`.checks` (``preflight``), :mod:`.inputs` (model, data,
features, selection), :mod:`.calibrate` (the variants), :mod:`.scoring` (the table's figures),
:mod:`.report` (the saved folder and the printed table), :mod:`.job` (the objects the steps pass) and
:mod:`.pipeline` (``run``: the steps in order).
"""

from __future__ import annotations

import logging

from .arguments import EngineArguments, RecipeArguments, requested_variants
from .calibrate import final_variant, run_variants, state_selection_on_eval
from .checks import preflight
from .inputs import feature_extractor, load_data, load_head, load_or_train_model, resolve_selection
from .job import Job, Outcome
from .pipeline import load_job, run
from .report import format_table, save_outputs
from .scoring import HEADROOM_L2, ORACLE, THRESHOLD_BOUND, UPPER_BOUND, evaluate, evaluate_results, headroom_rows

logger = logging.getLogger(__name__)

__all__ = [
    "HEADROOM_L2",
    "ORACLE",
    "THRESHOLD_BOUND", "UPPER_BOUND",
    "EngineArguments",
    "Job",
    "Outcome",
    "RecipeArguments",
    "evaluate",
    "evaluate_results",
    "feature_extractor",
    "final_variant",
    "format_table",
    "headroom_rows",
    "load_data",
    "load_head",
    "load_job",
    "load_or_train_model",
    "preflight",
    "requested_variants",
    "resolve_selection",
    "run",
    "run_variants",
    "save_outputs",
    "state_selection_on_eval",
]
