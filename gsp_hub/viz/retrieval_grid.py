"""Retrieval grids (matplotlib Agg, PNG): a query and its top-k gallery neighbours with scores, hits and misses.

Each neighbour's caption shows its rank, cosine score and label; when the query's label is known, neighbours with
the same label (hits) get a green frame and the others (misses) a red one. Missing gallery images (moved files) are
drawn as an empty grey tile. The PNG is written atomically (:func:`gsp_hub.viz.png.save_png`)::

    plot_retrieval_grid(query, [image_1, image_2, ...], scores=[0.93, 0.91, ...], path="grid.png",
                        labels=["cat", "dog", ...], query_label="cat")

:func:`plot_retrieval_rows` draws several queries in one figure, one row each (query, then its neighbours).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gsp_hub.checks import check_int
from gsp_hub.viz.png import check_png_path, save_png

__all__ = ["RetrievalRow", "plot_retrieval_grid", "plot_retrieval_rows"]

_TILE_INCHES = 1.9
_MATCH_COLOURS = {True: "#2ca02c", False: "#d62728"}


@dataclass(frozen=True)
class RetrievalRow:
    """One query of :func:`plot_retrieval_rows`: the query image and label, and its neighbours in rank order.

    neighbours: gallery images (None for an image that cannot be shown); scores: cosine similarity of each;
    labels: label of each neighbour (None = unknown). A neighbour is a hit when its label equals ``query_label``.
    """

    query: PIL.Image.Image
    neighbours: Sequence[PIL.Image.Image | None]
    scores: Sequence[float]
    labels: Sequence[str | None] | None = None
    query_label: str | None = None


def _tile(image: PIL.Image.Image | None) -> np.ndarray:
    if image is None:
        return np.full((8, 8, 3), 0.85)
    return np.asarray(image.convert("RGB"))


def _check_lengths(neighbours: Sequence[object], scores: Sequence[float], labels: Sequence[object] | None) -> None:
    if len(scores) != len(neighbours) or (labels is not None and len(labels) != len(neighbours)):
        raise ValueError(
            f"neighbours, scores and labels must have the same length, got {len(neighbours)}, {len(scores)} and "
            f"{None if labels is None else len(labels)}."
        )


def _blank(axes: Sequence[Axes]) -> None:
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_frame_on(False)


def _draw_query(axis: Axes, image: PIL.Image.Image, label: str | None, note: str = "") -> None:
    axis.imshow(_tile(image))
    caption = "query" + (f"\n{label}" if label is not None else "") + (f"\n{note}" if note else "")
    axis.set_title(caption, fontsize=9, fontweight="bold")


def _draw_neighbour(axis: Axes, image: PIL.Image.Image | None, rank: int, score: float, label: str | None,
                    query_label: str | None) -> None:
    """The neighbour tile: caption ``#rank score`` (+ label); a green (hit) or red (miss) frame when both labels
    are known."""
    axis.imshow(_tile(image))
    axis.set_title(f"#{rank}  {score:.3f}" + (f"\n{label}" if label is not None else ""), fontsize=9)
    if query_label is not None and label is not None:
        axis.set_frame_on(True)
        for spine in axis.spines.values():
            spine.set_color(_MATCH_COLOURS[label == query_label])
            spine.set_linewidth(3)


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
    _check_lengths(neighbours, scores, labels)
    check_int("columns", columns, minimum=2, meaning="query + at least one neighbour per row")
    target = check_png_path(path)
    labels = list(labels) if labels is not None else [None] * len(neighbours)
    tiles = len(neighbours) + 1
    width = min(columns, tiles)
    rows = math.ceil(tiles / width)
    figure = Figure(figsize=(_TILE_INCHES * width, (_TILE_INCHES + 0.35) * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, width, squeeze=False).ravel()
    _blank(axes)
    _draw_query(axes[0], query, query_label)
    for rank, (axis, image, score, label) in enumerate(zip(axes[1:], neighbours, scores, labels, strict=False), 1):
        _draw_neighbour(axis, image, rank, score, label, query_label)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_png(figure, target)


def plot_retrieval_rows(
    rows: Sequence[RetrievalRow],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Draw several queries, one per figure row: the query (with its hit count when labels are known), then its
    neighbours left to right, hits framed green and misses red; write a PNG to ``path``. Returns the path."""
    if not rows:
        raise ValueError("rows is empty; pass at least one RetrievalRow (a query and its neighbours).")
    for row in rows:
        _check_lengths(row.neighbours, row.scores, row.labels)
    target = check_png_path(path)
    width = 1 + max(len(row.neighbours) for row in rows)
    figure = Figure(figsize=(_TILE_INCHES * width, (_TILE_INCHES + 0.5) * len(rows)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), width, squeeze=False)
    _blank(axes.ravel())
    for row_axes, row in zip(axes, rows, strict=True):
        labels = list(row.labels) if row.labels is not None else [None] * len(row.neighbours)
        known = [label for label in labels if label is not None]
        note = ""
        if row.query_label is not None and known:
            note = f"{sum(label == row.query_label for label in known)}/{len(known)} hits"
        _draw_query(row_axes[0], row.query, row.query_label, note)
        for rank, (axis, image, score, label) in enumerate(
            zip(row_axes[1:], row.neighbours, row.scores, labels, strict=False), 1
        ):
            _draw_neighbour(axis, image, rank, score, label, row.query_label)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_png(figure, target)
