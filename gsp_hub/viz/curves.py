"""Training curves: the training loss and the retrieval metrics (Recall@1, MAP@R) per epoch, as one PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from gsp_hub.viz.png import save_png

__all__ = ["plot_training_curves"]


def plot_training_curves(history: Sequence[Mapping[str, float]], path: str | os.PathLike[str]) -> Path:
    """Plot ``history`` (one mapping per evaluation with ``epoch`` and any of ``train_loss``, ``recall@1``,
    ``map@r``, ``top1`` (classification accuracy)) into ``path`` (PNG, two panels), written atomically.
    Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    with_loss = [row for row in history if row.get("train_loss") is not None]
    loss_axis.plot([row["epoch"] for row in with_loss], [row["train_loss"] for row in with_loss], "o-")
    loss_axis.set(title="training loss", xlabel="epoch", ylabel="loss (mean since previous evaluation)")
    for key, label in (("recall@1", "Recall@1"), ("map@r", "MAP@R"), ("top1", "top-1 accuracy")):
        rows = [row for row in history if key in row]
        if not rows:
            continue
        metric_axis.plot([row["epoch"] for row in rows], [row[key] for row in rows], "o-", label=label)
    metric_axis.set(title="evaluation on the test split", xlabel="epoch", ylabel="fraction", ylim=(0, 1))
    metric_axis.legend()
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    try:
        return save_png(figure, path)
    finally:
        plt.close(figure)
