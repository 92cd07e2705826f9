"""``hf-cft train`` (the baseline trainer, :mod:`hf_cft.training`) and ``hf-cft cft`` (the CFT job,
:mod:`hf_cft.recipe`)."""

from __future__ import annotations

import logging

from ..recipe import EngineArguments, RecipeArguments, format_table, run
from ..training import TrainArguments, train
from .command import OUTPUT, Command

logger = logging.getLogger(__name__)

__all__ = ["CFT", "TRAIN", "run_cft", "run_train"]


def run_train(args: TrainArguments) -> dict:
    """Train a baseline (``output_dir/best``, ``train_report.json``); returns the report."""
    return train(args)


def run_cft(recipe: RecipeArguments, engine) -> dict:
    """Calibrate (``hf_cft.recipe.run``) and print the before / after table on the main process."""
    from accelerate import PartialState

    logging.getLogger("hf_cft.recipe").setLevel(logging.WARNING)  # the table is printed below
    result = run(recipe, engine)
    if PartialState().is_main_process:
        OUTPUT.info("\n%s", format_table(result["table"], result["eval_split"], result["kept"]))
    return result


TRAIN = Command(
    name="train",
    summary="Train a baseline on partial labels (Assume Negative, ignore, LL-R, Selective, Curriculum Labeling).",
    description="Train a baseline on partial labels; the best epoch on a held-out validation split is saved to "
                "output_dir/best. With no option: a small ResNet on the embedded digits_mosaic at 10% known, "
                "Assume Negative. Several processes: accelerate launch -m hf_cft.cli train ...",
    dataclasses=(TrainArguments,),
    run=run_train,
)

CFT = Command(
    name="cft",
    summary="Calibrate a trained classifier with Category-wise Fine-Tuning and report before / after.",
    description="Category-wise fine-tuning, end to end: the model (or an Assume-Negative baseline trained first) "
                "-> features -> every variant -> per-category choice -> before / after on the evaluation split "
                "-> the calibrated model, report, plot and card in output_dir. With no option: the offline demo on "
                "digits_mosaic. Several processes: accelerate launch -m hf_cft.cli cft ...",
    dataclasses=(RecipeArguments, EngineArguments),
    run=run_cft,
)
