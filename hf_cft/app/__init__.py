"""A page to look at a calibrated model (Gradio; ``pip install 'hf_cft[app]'``), locally or as a Hub Space.

``python -m hf_cft.app MODEL`` (a folder or a Hub id) serves it at http://127.0.0.1:7860: per category, the
probability before CFT (the trained rows, kept in ``cft_original_head.safetensors``) and after, for images you
upload, with the yes / no answer at the saved thresholds; and the run's report (before / after table, plots,
every category's gain and selection evidence). ``python -m hf_cft.app space MODEL SPACE`` pushes the same page as a
Gradio Space that loads the model by its Hub id.

    >>> from hf_cft.app import build_app, launch
    >>> launch(build_app("outputs/cft-digits-mosaic"))

:mod:`.model` and :mod:`.report` hold what the page computes and reads (no Gradio); :mod:`.page` the page;
:mod:`.space` the Space; :mod:`.command` the command lines. Gradio is imported only when a page is built.
"""

from .command import AppArguments, SpaceArguments, main, run_app, run_space, space_main
from .model import AppModel, AppModelError, Probabilities, category_table, load_app_model, probabilities
from .page import build_app, launch, offline_theme, score_files
from .report import RunReport, read_run_report
from .space import SpaceOptions, push_space, space_files, write_space

__all__ = ["AppArguments", "AppModel", "AppModelError", "Probabilities", "RunReport", "SpaceArguments",
           "SpaceOptions", "build_app", "category_table", "launch", "load_app_model", "main", "offline_theme",
           "probabilities", "push_space", "read_run_report", "run_app", "run_space", "score_files", "space_files",
           "space_main", "write_space"]
