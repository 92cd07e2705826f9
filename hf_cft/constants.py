"""Names shared by several modules: the files a run writes and the skip reasons of the report.

One place, so that a reader (a merge of shards, the recipe, a test) matches what a writer wrote.
"""

from __future__ import annotations

__all__ = [
    "CFT_CONFIG_NAME",
    "CFT_REPORT_NAME",
    "CFT_RESULTS_NAME",
    "CALIBRATION_PLOT_NAME",
    "PER_CATEGORY_CSV_NAME",
    "GAINS_PLOT_NAME",
    "IN_ANOTHER_SHARD",
    "MODEL_CARD_NAME",
    "NOT_REQUESTED",
    "ORIGINAL_HEAD_NAME",
    "PSEUDO_LABELS_NAME",
    "TRAINER_STATE_NAME",
    "TRAIN_REPORT_NAME",
]

# -- files of a calibrated model folder -------------------------------------------------------------------------
CFT_CONFIG_NAME = "cft_config.json"  # the CFTConfig the rows were made with
CFT_REPORT_NAME = "cft_report.json"  # CFTResult.to_json: the per-category report
GAINS_PLOT_NAME = "cft_gains.png"  # per-category gains
MODEL_CARD_NAME = "README.md"  # the model card
CFT_RESULTS_NAME = "cft_results.json"  # the recipe's before / after table
ORIGINAL_HEAD_NAME = "cft_original_head.safetensors"  # the trained rows CFT replaced: `weight` C×d, `bias` C
CALIBRATION_PLOT_NAME = "cft_calibration.png"  # reliability diagram before / after, on the evaluation split
PER_CATEGORY_CSV_NAME = "per_category.csv"  # every category: counts, scores, gain, calibration, threshold

# -- files of the baseline trainer ------------------------------------------------------------------------------
TRAIN_REPORT_NAME = "train_report.json"  # beside the best model: validation rows, history, report split
TRAINER_STATE_NAME = "trainer_state.json"  # in each checkpoint: epoch, best score, history
PSEUDO_LABELS_NAME = "pseudo_labels.safetensors"  # in each checkpoint: CL pseudo-labels, Selective prior

# -- skip reasons of CategoryReport.skipped that code matches on -------------------------------------------------
IN_ANOTHER_SHARD = "in another shard"  # another process fitted it; merge_shards takes its row from there
NOT_REQUESTED = "not requested"  # outside `categories=`
