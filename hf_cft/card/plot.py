"""The per-category gains plot of a calibrated model (``cft_gains.png``), its bars sorted by gain."""

from __future__ import annotations

import io
import logging

logger = logging.getLogger(__name__)

__all__ = ["METRIC_LABELS", "gains_plot_png", "plotted_gains"]

METRIC_LABELS = {"ap": "AP", "auroc": "AUROC"}


def plotted_gains(result, per_category_after: list[float | None] | None = None,
                  per_category_before: list[float | None] | None = None) -> tuple[list[float], str, str]:
    """What the plot shows: per-category gains (in category order), the metric ("ap" / "auroc") and the split.

    With per-category scores of an evaluation split: their change in ``result.config.metric`` ("evaluation");
    else the selection split's gains of the report, in the metric rows were chosen by ("selection"). A category
    without a gain counts 0.
    """
    if per_category_after is not None and per_category_before is not None:
        gains = [(a - b) if a is not None and b is not None else 0.0
                 for a, b in zip(per_category_after, per_category_before)]
        return gains, result.config.metric, "evaluation"
    return [r.gain or 0.0 for r in result.report], result.config.judged_by, "selection"


def gains_plot_png(result, per_category_after: list[float | None] | None = None,
                   per_category_before: list[float | None] | None = None) -> bytes:
    """A bar chart of per-category gains (see :func:`plotted_gains`), sorted by gain, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains, metric, split = plotted_gains(result, per_category_after, per_category_before)
    names = [r.name or str(r.index) for r in result.report]
    order = sorted(range(len(gains)), key=lambda i: (-gains[i], i))  # largest gain first, ties in category order
    gains, names = [gains[i] for i in order], [names[i] for i in order]
    width = max(6.0, min(40.0, 0.25 * len(names)))
    fig, ax = plt.subplots(figsize=(width, 3.2))
    ax.bar(range(len(gains)), [100 * g for g in gains],
           color=["#2a9d8f" if g > 0 else "#e76f51" if g < 0 else "#999999" for g in gains])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric.upper())} gain (points)")
    ax.set_title(f"CFT-{result.config.variant}: per-category gain on the {split} split\n(sorted by gain)", fontsize=10)
    if not any(gains):
        ax.text(0.5, 0.75, "no category changed", transform=ax.transAxes, ha="center", va="center", color="#555555")
    if len(names) <= 100:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
