"""What a metric-learning run must beat, and where its pooling looks: raw-pixel neighbours and the target-cell mass.

* Raw-pixel nearest neighbours (:func:`raw_pixel_metrics`): the retrieval metrics of a split searched by cosine
  similarity on its pixels, computed without the model or its transforms: every image decoded to RGB (PIL), resized
  (bilinear) to the run's input size scaled down to at most :data:`RAW_PIXEL_MAX_SIDE` pixels a side (when its size
  differs), flattened and centred by the split's mean image (numpy), then scored by
  :func:`gsp_hub.metrics.retrieval_metrics`. A trained model that does not beat it has learnt nothing the pixels did
  not already say. The other baseline, the untrained model, is the run's first evaluation (``--eval-at-start``).
* Target-cell mass (:func:`target_cell_mass`): on a collage data set (a ``target_cell`` column: the cell, 0-3, that
  holds the label tile), the pooling weight that falls on the label tile's cell, averaged over the images of a split:
  0.25 for average pooling, 1 for a pooling that looks at the label tile only. Measured for poolings with
  ``location_weights`` (``gsp``, ``attn``) over an even square feature map, each of whose locations lies in one cell
  (:func:`gsp_hub.data.collage_location_cells`); :func:`retrieval_and_target_mass` gets it from the same forward pass
  as the embeddings.
"""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import torch
from accelerate import Accelerator
from datasets import Dataset, Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from gsp_hub.data import IMAGE_COLUMN, LABEL_COLUMN, TARGET_CELL_COLUMN, collage_location_cells, decode_image
from gsp_hub.train.evaluation import gather_outputs, split_retrieval_metrics

__all__ = [
    "RAW_PIXEL_MAX_SIDE",
    "TARGET_MASS_KEY",
    "EmbeddingsAndLocationWeights",
    "raw_pixel_metrics",
    "raw_pixel_size",
    "raw_pixels",
    "reports_target_mass",
    "retrieval_and_target_mass",
    "target_cell_locations",
    "target_cell_mass",
]

RAW_PIXEL_MAX_SIDE = 64  # raw-pixel vectors of at most 64 x 64 x 3 values: the baseline stays cheap on any data set
TARGET_MASS_KEY = "target_mass"  # the metric's name in the evaluation rows and metrics.json


def raw_pixel_size(input_size: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of the raw-pixel vectors for a run whose model input is ``input_size`` (3, H, W): (H, W)
    scaled down so that its longer side is at most :data:`RAW_PIXEL_MAX_SIDE`."""
    height, width = input_size[-2:]
    scale = min(1.0, RAW_PIXEL_MAX_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def raw_pixels(rows: Dataset, size: tuple[int, int]) -> np.ndarray:
    """(M, H * W * 3) float32 pixels of every image of ``rows`` (decoded to RGB, resized to ``size`` = (H, W) when
    it differs), centred by their mean over the rows."""
    values = rows.select_columns([IMAGE_COLUMN]).cast_column(IMAGE_COLUMN, Image(decode=False))[IMAGE_COLUMN]
    pictures = []
    for value in values:
        picture = decode_image(value)
        if picture.size != (size[1], size[0]):
            picture = picture.resize((size[1], size[0]), PIL.Image.Resampling.BILINEAR)
        pictures.append(np.asarray(picture, dtype=np.float32).reshape(-1))
    pixels = np.stack(pictures)
    return pixels - pixels.mean(axis=0)


def raw_pixel_metrics(rows: Dataset, size: tuple[int, int], num_queries: int = 0) -> dict[str, float]:
    """Retrieval metrics of nearest neighbours by cosine on the centred :func:`raw_pixels` of ``rows``:
    leave-one-out, or its first ``num_queries`` rows searching the others (as the run evaluates that split)."""
    labels = torch.as_tensor(np.asarray(rows[LABEL_COLUMN]))
    return split_retrieval_metrics(torch.from_numpy(raw_pixels(rows, size)), labels, num_queries)


def reports_target_mass(model: nn.Module, rows: Dataset) -> bool:
    """True when ``rows`` are collages (a ``target_cell`` column) and ``model``'s pooling has location weights."""
    return TARGET_CELL_COLUMN in rows.column_names and hasattr(getattr(model, "pool", None), "location_weights")


def target_cell_locations(target_cells: Tensor, num_locations: int) -> Tensor | None:
    """(M, N) bool, True at the locations of an H x H map (N = H * H, row-major) that lie in each image's label
    tile cell (``target_cells`` (M,) in 0-3). None when the map is not an even square (a location would straddle
    two cells)."""
    side = math.isqrt(num_locations)
    if side * side != num_locations or side % 2:
        return None
    cells = torch.as_tensor(collage_location_cells(side))  # (N,)
    return cells[None, :] == target_cells[:, None]


def target_cell_mass(weights: Tensor, target_cells: Tensor) -> float | None:
    """Mean pooling weight on the label tile's cell: ``weights`` (M, N) of an H x H map (rows sum to 1, locations
    row-major), ``target_cells`` (M,) in 0-3. None when the map is not an even square."""
    on_target = target_cell_locations(target_cells, weights.shape[1])  # (M, N)
    return None if on_target is None else float((weights.double() * on_target).sum(dim=1).mean())


class EmbeddingsAndLocationWeights(nn.Module):
    """Evaluation view of a MetricNet whose pooling has ``location_weights``: images (B, C, H, W) -> (embeddings
    (B, D), pooling weights (B, N) of the N = h * w locations), from one backbone pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.model.forward_features(images)  # (B, h, w, C)
        embeddings, transport = self.model.forward_head(features, pre_logits=True, return_aux=True)
        if transport is not None:  # GSP: the weights of the solve that pooled the embeddings
            return embeddings, transport.weights
        return embeddings, self.model.pool.location_weights(self.model.embed(features).flatten(1, 2))


def retrieval_and_target_mass(model: nn.Module, loader: DataLoader, accelerator: Accelerator,
                              target_cells: Tensor, *, channels_last: bool = False,
                              num_queries: int = 0) -> dict[str, float]:
    """Retrieval metrics of an evaluation split (as :func:`gsp_hub.train.evaluation.retrieval_evaluation`) and,
    when the map allows it, its :func:`target_cell_mass` (``target_cells`` (M,), in the loader's row order) as
    ``target_mass``. ``model`` is the unwrapped model, run under the accelerator's autocast; every RNG is left
    untouched."""
    with torch.random.fork_rng(devices=[]), accelerator.autocast():
        (embeddings, weights), labels = gather_outputs(EmbeddingsAndLocationWeights(model), loader, accelerator,
                                                       count=2, channels_last=channels_last)
    metrics = split_retrieval_metrics(embeddings, labels, num_queries)
    mass = target_cell_mass(weights, target_cells)
    return metrics if mass is None else {**metrics, TARGET_MASS_KEY: mass}
