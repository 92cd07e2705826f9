"""The per-category gains plot of a calibrated model (``cft_gains.png``)."""

from __future__ import annotations

import io
import logging

logger = logging.getLogger(__name__)

__all__ = ["gains_plot_png"]


def gains_plot_png(result, per_category_after: list[float | None] | None = None,
                   per_category_before: list[float | None] | None = None) -> bytes:
    """A bar chart of per-category gains (selection split, or an evaluation split when given) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if per_category_after is not None and per_category_before is not None:
        gains = [(a - b) if a is not None and b is not None else 0.0
                 for a, b in zip(per_category_after, per_category_before)]
        title = "per-category gain on the evaluation split"
    else:
        gains = [r.gain or 0.0 for r in result.report]
        title = "per-category gain on the selection split"
    names = [r.name or str(r.index) for r in result.report]
    width = max(6.0, min(40.0, 0.25 * len(names)))
    fig, ax = plt.subplots(figsize=(width, 3.2))
    ax.bar(range(len(gains)), [100 * g for g in gains],
           color=["#2a9d8f" if g > 0 else "#e76f51" if g < 0 else "#999999" for g in gains])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(f"{result.config.metric.upper()} gain (points)")
    ax.set_title(f"CFT-{result.config.variant}: {title}")
    if len(names) <= 100:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
