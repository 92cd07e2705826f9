"""The per-category gains plot of a calibrated model (``cft_gains.png``), its bars sorted by gain."""

from __future__ import annotations

import io
import logging

logger = logging.getLogger(__name__)

__all__ = ["METRIC_LABELS", "gains_plot_png", "plotted_gains", "reliability_plot_png"]

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


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def gains_plot_png(result, per_category_after: list[float | None] | None = None,
                   per_category_before: list[float | None] | None = None,
                   intervals: dict[str, list[float]] | None = None) -> bytes:
    """A bar chart of per-category gains (see :func:`plotted_gains`), sorted by gain, as PNG bytes; ``intervals``
    (category index as text → (low, high), evaluation gains only) are drawn as whiskers."""
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
    if intervals and split == "evaluation":
        at = [(x, intervals[str(i)]) for x, i in enumerate(order) if str(i) in intervals]
        if at:
            ax.vlines([x for x, _ in at], [100 * lo for _, (lo, _) in at], [100 * hi for _, (_, hi) in at],
                      color="#264653", linewidth=0.8, label="95% paired-bootstrap interval")
            ax.legend(fontsize=7, loc="upper right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric.upper())} gain (points)")
    ax.set_title(f"CFT-{result.config.variant}: per-category gain on the {split} split\n(sorted by gain)", fontsize=10)
    if not any(gains):
        ax.text(0.5, 0.75, "no category changed", transform=ax.transAxes, ha="center", va="center", color="#555555")
    if len(names) <= 100:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
    return _png(fig)


def reliability_plot_png(reliability: dict, split: str) -> bytes:
    """A reliability diagram (share of positives against mean probability per bin, pooled over every known label
    of ``split``) before and after CFT, with the bins' counts below, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.8, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=0.8, label="perfectly calibrated")
    bins = len(reliability["before"]["count"])
    centers = [(i + 0.5) / bins for i in range(bins)]
    for (tag, color), offset in zip((("before", "#e76f51"), ("after", "#2a9d8f")), (-0.15, 0.15)):
        stats = reliability[tag]
        pts = [(p, r) for p, r in zip(stats["mean_probability"], stats["positive_rate"]) if p is not None]
        ax.plot([p for p, _ in pts], [r for _, r in pts], marker="o", markersize=3, color=color,
                label=f"{tag} CFT")
        hist.bar([c + offset / bins for c in centers], stats["count"], width=0.3 / bins, color=color)
    ax.set_ylabel("share of positives")
    ax.set_title(f"Reliability on the {split} split's known labels", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    hist.set_yscale("log")
    hist.set_ylabel("labels")
    hist.set_xlabel("predicted probability")
    return _png(fig)
