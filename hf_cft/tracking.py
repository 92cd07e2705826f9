"""Experiment trackers for the trainer and the recipe: ``--report_to`` turned into accelerate's trackers.

``--report_to none`` (the default) logs nowhere; ``all`` logs to every tracker installed; names (``tensorboard``,
``wandb``, ``trackio``, ``mlflow``, …) to those. Each is accelerate's own tracker class (``accelerate.tracking``,
what ``Accelerator(log_with=...)`` builds), opened on the main process only with its logs under ``logging_dir``
where it keeps local files (tensorboard: ``<logging_dir>/<project>``). Scalars go to every tracker; a table or
an image goes to the trackers that take one and is skipped, with a note in the log, by the others. A tracker
that fails to log a table or an image after the run's work is done is reported, not raised.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["REPORT_TO_CHOICES", "REPORT_TO_HELP", "TRACKER_EXTRAS", "Trackers", "check_report_to", "open_trackers"]

TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab")
"""accelerate's built-in trackers (``accelerate.utils.LoggerType``)."""
REPORT_TO_CHOICES = ("none", "all", *TRACKERS)
TRACKER_EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}
"""The trackers hf_cft declares an extra for: ``pip install 'hf_cft[<extra>]'``."""
REPORT_TO_HELP = ("'none' (default): no tracker; 'all': every tracker installed; or names among "
                  f"{', '.join(TRACKERS)} (an extra each: pip install 'hf_cft[tensorboard]', or [wandb], [trackio], "
                  "[mlflow]).")


def check_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """The trackers ``report_to`` names, checked: ``[]`` for none, ``["all"]``, or names whose package is installed
    (a ValueError says which is missing and how to install it)."""
    from accelerate.tracking import get_available_trackers

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = list(dict.fromkeys(str(n) for n in names))  # in order, once
    unknown = [n for n in names if n not in REPORT_TO_CHOICES]
    if unknown:
        raise ValueError(f"--report_to: unknown tracker(s) {unknown}; choose among {list(REPORT_TO_CHOICES)}")
    if "none" in names:
        if len(names) > 1:
            raise ValueError(f"--report_to none means no tracker: do not combine it with others, got {names}")
        return []
    if "all" in names:
        return ["all"]
    available = {str(t) for t in get_available_trackers()}
    missing = [n for n in names if n not in available]
    if missing:
        hints = [f"pip install 'hf_cft[{TRACKER_EXTRAS[n]}]'" if n in TRACKER_EXTRAS else f"pip install {n}"
                 for n in missing]
        raise ValueError(f"--report_to {' '.join(names)}: {', '.join(missing)} not installed: {'; '.join(hints)}")
    return names


def _scalar_config(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """A run's settings as trackers store them: numbers, text and booleans as they are, anything else as JSON."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str) for k, v in config.items()}


def _finite(value: Any) -> Any:
    """NaN and infinities as None, so that every tracker's table takes them."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    head = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(head + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


class Trackers:
    """The trackers of one run (none on a process other than the main one, where every call does nothing)."""

    def __init__(self, trackers: Sequence[Any] = ()) -> None:
        self.trackers = list(trackers)  # accelerate GeneralTracker objects, started

    def __bool__(self) -> bool:
        return bool(self.trackers)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def log(self, values: dict[str, float], step: int | None = None) -> None:
        """Scalars (numbers) to every tracker; a NaN is left out."""
        values = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                  step: int | None = None) -> None:
        """A table to the trackers that take one (wandb, trackio, clearml, mlflow; tensorboard as markdown text)."""
        rows = [[_finite(v) for v in row] for row in rows]
        for tracker in self.trackers:
            self._guarded(tracker, name, lambda t: _table(t, name, list(columns), rows, step))

    def log_image(self, name: str, path: str, step: int | None = None) -> None:
        """An image file (a plot) to the trackers that take one (tensorboard, wandb, trackio, mlflow, …)."""
        for tracker in self.trackers:
            self._guarded(tracker, name, lambda t: _image(t, name, path, step))

    @staticmethod
    def _guarded(tracker, name: str, log) -> None:
        try:
            if not log(tracker):
                logger.info("tracker %s takes no %s: not logged there", tracker.name, name)
        except Exception as err:  # a tracker's own failure, after the run's work is done, must not end the run
            logger.warning("tracker %s could not log %s: %s: %s", tracker.name, name, type(err).__name__, err)

    def finish(self) -> None:
        """Close every tracker (the process group, unlike ``Accelerator.end_training``, is left alone)."""
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def _table(tracker, name: str, columns: list[str], rows: list[list[Any]], step: int | None) -> bool:
    if tracker.name == "trackio":
        import trackio

        tracker.log({name: trackio.Table(columns=columns, data=rows)}, step=step)
    elif hasattr(tracker, "log_table"):  # wandb, clearml
        tracker.log_table(name, columns=columns, data=rows, step=step)
    elif tracker.name == "tensorboard":
        tracker.log({name: _markdown(columns, rows)}, step=step)  # add_text renders markdown
    elif tracker.name == "mlflow":
        import mlflow

        mlflow.log_table(data={c: [row[i] for row in rows] for i, c in enumerate(columns)},
                         artifact_file=f"{name.replace('/', '_')}.json")
    else:
        return False
    return True


def _image(tracker, name: str, path: str, step: int | None) -> bool:
    if tracker.name == "trackio":
        import trackio

        tracker.log({name: trackio.Image(path)}, step=step)
    elif tracker.name == "mlflow" and hasattr(tracker, "log_artifact"):
        tracker.log_artifact(path)
    elif hasattr(tracker, "log_images"):  # tensorboard, wandb, aim, clearml, swanlab
        from PIL import Image

        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        extra = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
        tracker.log_images({name: pixels[None] if extra else [pixels]}, step=step, **extra)
    else:
        return False
    return True


def open_trackers(report_to: str | Sequence[str] | None, project: str, logging_dir: str,
                  config: dict[str, Any] | None = None) -> Trackers:
    """Start the trackers ``report_to`` names for ``project`` (main process only; others get none), with the run's
    settings ``config`` stored as its hyperparameters."""
    from accelerate import PartialState
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, filter_trackers

    names = check_report_to(report_to)
    if not names or not PartialState().is_main_process:
        return Trackers()
    trackers = []
    for kind in filter_trackers(names, logging_dir):  # "all": every tracker installed
        cls = LOGGER_TYPE_TO_CLASS[str(kind)]
        tracker = cls(project, logging_dir) if cls.requires_logging_directory else cls(project)
        getattr(tracker, "start", lambda: None)()  # recent accelerate starts a tracker apart from making it
        trackers.append(tracker)
    if config:
        for tracker in trackers:
            tracker.store_init_configuration(_scalar_config(config))
    logger.info("logging to %s", ", ".join(t.name for t in trackers) or "no tracker (none installed)")
    return Trackers(trackers)
