"""Retrieval grid: a query image followed by its top-k gallery neighbours with scores (matplotlib Agg, PNG).

Each neighbour's caption shows its rank, cosine score and label; when the query's label is known, neighbours with
the same label get a green frame and the others a red one. Missing gallery images (moved files) are drawn as an
empty grey tile. The PNG is written atomically (temp file in the same folder, then ``os.replace``)::

    plot_retrieval_grid(query, [image_1, image_2, ...], scores=[0.93, 0.91, ...], path="grid.png",
                        labels=["cat", "dog", ...], query_label="cat")
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_retrieval_grid"]

_TILE_INCHES = 1.9
_MATCH_COLOURS = {True: "#2ca02c", False: "#d62728"}


def _tile(image: PIL.Image.Image | None) -> np.ndarray:
    if image is None:
        return np.full((8, 8, 3), 0.85)
    return np.asarray(image.convert("RGB"))


def plot_retrieval_grid(
    query: PIL.Image.Image,
    neighbours: Sequence[PIL.Image.Image | None],
    scores: Sequence[float],
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str | None] | None = None,
    query_label: str | None = None,
    columns: int = 6,
    title: str | None = None,
) -> Path:
    """Draw the query and its neighbours (best first) in rows of ``columns`` tiles; write a PNG to ``path``.

    Args:
        query: the query image.
        neighbours: gallery images in rank order (None for an image that cannot be shown).
        scores: cosine similarity of each neighbour to the query.
        path: output ``.png`` file (its folder is created).
        labels: label of each neighbour (None = unknown).
        query_label: label of the query; frames neighbours green (same label) or red.
        columns: tiles per row (the query takes the first tile).
        title: figure title.
    """
    if len(scores) != len(neighbours) or (labels is not None and len(labels) != len(neighbours)):
        raise ValueError(
            f"neighbours, scores and labels must have the same length, got {len(neighbours)}, {len(scores)} and "
            f"{None if labels is None else len(labels)}."
        )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 2:
        raise ValueError(f"columns must be an int >= 2 (query + at least one neighbour per row), got {columns!r}.")
    target = Path(path).expanduser().absolute()
    if target.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {target.name!r}.")
    labels = list(labels) if labels is not None else [None] * len(neighbours)
    tiles = len(neighbours) + 1
    width = min(columns, tiles)
    rows = math.ceil(tiles / width)
    figure = Figure(figsize=(_TILE_INCHES * width, (_TILE_INCHES + 0.35) * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, width, squeeze=False).ravel()
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_frame_on(False)
    axes[0].imshow(_tile(query))
    axes[0].set_title("query" + (f"\n{query_label}" if query_label is not None else ""), fontsize=9, fontweight="bold")
    for rank, (axis, image, score, label) in enumerate(zip(axes[1:], neighbours, scores, labels, strict=False), 1):
        axis.imshow(_tile(image))
        axis.set_title(f"#{rank}  {score:.3f}" + (f"\n{label}" if label is not None else ""), fontsize=9)
        if query_label is not None and label is not None:
            axis.set_frame_on(True)
            for spine in axis.spines.values():
                spine.set_color(_MATCH_COLOURS[label == query_label])
                spine.set_linewidth(3)
    if title:
        figure.suptitle(title, fontsize=10)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.stem}.tmp-", suffix=".png", dir=target.parent)
    os.close(handle)
    try:
        figure.savefig(temp_name, dpi=100)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, target)
    finally:
        Path(temp_name).unlink(missing_ok=True)
    return target
