"""GSP transport-plan maps: where a GSP model pools from, and which prototype each location is sent to (PNG).

A GSP model (a :class:`~gsp_hub.models.MetricNet` with ``pool='gsp'``) turns an image into a feature map of
N = H x W locations and transports a fraction of their mass onto K prototypes. Two per-location quantities explain
the pooled embedding:

* the pooling weight ``w_j`` (``GSPOutput.weights``; the weights of an image sum to 1, uniform = 1/N);
* the assigned prototype: the prototype that receives most of location j's transported mass, i.e. the argmax over k
  of the transport plan ``plan[k, j] = transported[j] * assignment[k, j] / N`` (= the nearest prototype).

Usage::

    maps = compute_transport_maps(model, pixel_values)            # pixel_values (B, 3, h, w), preprocessed
    plot_transport_map(image, maps.weights[0], maps.assignments[0], maps.grid_hw, "map.png")
    explain_images(model, [PIL.Image.open("a.jpg")], ["a_map.png"])  # preprocessing + both steps
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from gsp_hub.data import create_image_transforms, decode_image
from gsp_hub.layers import GSP
from gsp_hub.models import MetricNet
from gsp_hub.models.metric_net import feature_grid
from gsp_hub.viz.png import check_png_path, save_png

__all__ = [
    "TransportMaps",
    "check_gsp_model",
    "compute_transport_maps",
    "explain_images",
    "feature_grid",
    "plot_transport_map",
]

#: Grids up to this many locations get the prototype number written in every cell.
_MAX_LABELLED_CELLS = 256


@dataclass(frozen=True)
class TransportMaps:
    """Per-location GSP quantities of a batch of B images, locations in row-major order of the (H, W) map.

    weights: (B, N) float32 pooling weights, each row sums to 1 (equal to ``GSPOutput.weights``).
    assignments: (B, N) int64 prototype index in [0, num_prototypes) that receives most of each location's mass.
    grid_hw: (H, W) with H * W = N, the feature map over the input image.
    num_prototypes: K.
    """

    weights: Tensor
    assignments: Tensor
    grid_hw: tuple[int, int]
    num_prototypes: int


def check_gsp_model(model: nn.Module) -> GSP:
    """The GSP layer of ``model``; raises ValueError (saying what the model is and what to use) unless ``model`` is
    a MetricNet with ``pool='gsp'``."""
    if not isinstance(model, MetricNet):
        architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", "unknown architecture")
        raise ValueError(
            f"transport maps need a gsp_hub MetricNet with pool='gsp', got a {type(model).__name__} ({architecture}). "
            "Use a GSP model, e.g. an export of gsp_resnet18 or metric_net(pool='gsp')."
        )
    if not isinstance(model.pool, GSP):
        raise ValueError(
            f"transport maps need pool='gsp', but this model pools with {model.global_pool!r} "
            f"({type(model.pool).__name__}), which has no transport plan (its location weights are fixed). "
            "Use a model trained with --pool gsp."
        )
    return model.pool


@torch.no_grad()
def compute_transport_maps(model: nn.Module, pixel_values: Tensor) -> TransportMaps:
    """Pooling weights and prototype assignments of a GSP model for preprocessed images (B, 3, h, w).

    Both come from one solve of the GSP layer on the embedded tokens (the computation of
    ``forward_head(..., return_aux=True)``): the weights are ``GSPOutput.weights``, the assignment the argmax over
    prototypes of the transport plan. Runs in eval mode (the model's mode is restored).
    """
    gsp = check_gsp_model(model)
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must have shape (B, 3, h, w), got {tuple(pixel_values.shape)}.")
    was_training = model.training
    model.eval()
    try:
        features = model.forward_features(pixel_values)  # (B, H, W, C_backbone)
        aux, soft_assignment = gsp.transport_with_assignment(model.embed(features.flatten(1, 2)))  # (B, K, N)
    finally:
        model.train(was_training)
    grid_hw = (features.shape[1], features.shape[2])
    return TransportMaps(
        weights=aux.weights.float(),
        assignments=soft_assignment.argmax(dim=1),
        grid_hw=grid_hw,
        num_prototypes=gsp.num_prototypes,
    )


def _as_grid(values: Tensor | np.ndarray, grid_hw: tuple[int, int], name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.size != grid_hw[0] * grid_hw[1]:
        raise ValueError(f"{name} has {array.size} values, but grid_hw={grid_hw} has {grid_hw[0] * grid_hw[1]} "
                         "locations; pass one image's (N,) or (H, W) values.")
    return array.reshape(grid_hw)


def _upsample(grid: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) -> (h, w) by bilinear interpolation: each cell value sits at its cell's centre on the image."""
    tensor = torch.as_tensor(grid, dtype=torch.float32)[None, None]
    return F.interpolate(tensor, size=size_hw, mode="bilinear", align_corners=False)[0, 0].numpy()


def _draw_cells(axis: Axes, grid_hw: tuple[int, int], size_hw: tuple[int, int]) -> None:
    """Thin white lines between the feature-map cells."""
    for row in range(1, grid_hw[0]):
        axis.axhline(row * size_hw[0] / grid_hw[0] - 0.5, color="white", linewidth=0.6, alpha=0.7)
    for column in range(1, grid_hw[1]):
        axis.axvline(column * size_hw[1] / grid_hw[1] - 0.5, color="white", linewidth=0.6, alpha=0.7)


def plot_transport_map(
    image: PIL.Image.Image | np.ndarray,
    weights: Tensor | np.ndarray,
    assignments: Tensor | np.ndarray,
    grid_hw: tuple[int, int],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Draw one image's transport plan into a PNG (written atomically; its folder is created). Returns the path.

    Three panels: the image; the pooling weights upsampled bilinearly over it (heatmap, colour bar in units of the
    uniform weight 1/N; the title gives the effective number of locations, exp(entropy of the weights)); each
    location's assigned prototype (one colour per prototype over the location's cell, its number written in the
    cell, opacity growing with the location's weight).

    Args:
        image: the image the model saw, (h, w) RGB (a PIL image, or an (h, w, 3) array in [0, 1] or uint8).
        weights: (N,) or (H, W) pooling weights of the locations (sum 1).
        assignments: (N,) or (H, W) prototype index of each location.
        grid_hw: (H, W) of the feature map; N = H * W, row-major.
        path: the ``.png`` file to write.
        title: figure title (default: none).
    """
    target = check_png_path(path)
    weight_grid = _as_grid(weights, grid_hw, "weights").astype(np.float64)
    prototype_grid = _as_grid(assignments, grid_hw, "assignments").astype(np.int64)
    picture = np.asarray(image.convert("RGB")) if isinstance(image, PIL.Image.Image) else np.asarray(image)
    size_hw = (picture.shape[0], picture.shape[1])
    locations = weight_grid.size
    relative = weight_grid * locations  # 1 = the uniform weight 1/N
    probabilities = np.clip(weight_grid, 1e-12, None)
    effective = float(np.exp(-(probabilities * np.log(probabilities)).sum()))

    figure = Figure(figsize=(10.5, 3.9), layout="constrained")
    FigureCanvasAgg(figure)
    image_axis, weight_axis, prototype_axis = figure.subplots(1, 3)
    for axis in (image_axis, weight_axis, prototype_axis):
        axis.set_xticks([])
        axis.set_yticks([])
    image_axis.imshow(picture)
    image_axis.set_title(f"model input ({size_hw[1]}x{size_hw[0]} px)", fontsize=9)

    weight_axis.imshow(picture)
    heat = weight_axis.imshow(_upsample(relative, size_hw), cmap="inferno", alpha=0.6,
                              vmin=0.0, vmax=max(float(relative.max()), 1.0))
    _draw_cells(weight_axis, grid_hw, size_hw)
    weight_axis.set_title(f"pooling weights ({grid_hw[0]}x{grid_hw[1]} map)\n"
                          f"effective locations {effective:.1f} of {locations}", fontsize=9)
    figure.colorbar(heat, ax=weight_axis, fraction=0.046, pad=0.02, label="weight x N (1 = uniform)")

    palette = colormaps["tab20"]
    colours = palette(prototype_grid % palette.N)  # (H, W, 4)
    colours[..., 3] = 0.2 + 0.6 * relative / max(float(relative.max()), 1e-12)
    prototype_axis.imshow(picture)
    prototype_axis.imshow(colours, extent=(-0.5, size_hw[1] - 0.5, size_hw[0] - 0.5, -0.5), interpolation="nearest")
    _draw_cells(prototype_axis, grid_hw, size_hw)
    if locations <= _MAX_LABELLED_CELLS:
        cell_h, cell_w = size_hw[0] / grid_hw[0], size_hw[1] / grid_hw[1]
        font = max(5, min(12, int(90 / max(grid_hw))))
        for (row, column), prototype in np.ndenumerate(prototype_grid):
            prototype_axis.text((column + 0.5) * cell_w - 0.5, (row + 0.5) * cell_h - 0.5, str(prototype),
                                ha="center", va="center", fontsize=font, color="white", fontweight="bold")
    used = len(np.unique(prototype_grid))
    prototype_axis.set_title(f"assigned prototype ({used} distinct)\nopacity = pooling weight", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_png(figure, target)


def explain_images(
    model: nn.Module,
    images: Sequence[PIL.Image.Image],
    paths: Sequence[str | os.PathLike[str]],
    *,
    input_size: int | None = None,
    titles: Sequence[str | None] | None = None,
) -> list[Path]:
    """Preprocess ``images`` with the model's timm evaluation transform, compute their transport maps and write one
    PNG per image to ``paths``. Returns the written paths.

    Args:
        model: a GSP model (checked first).
        images: PIL images (any mode; decoded to RGB).
        paths: one ``.png`` path per image.
        input_size: image side in pixels (default: the model's preprocessing, ``pretrained_cfg['input_size']``).
        titles: one figure title per image (default: none).
    """
    check_gsp_model(model)
    if len(paths) != len(images) or (titles is not None and len(titles) != len(images)):
        raise ValueError(f"images, paths and titles must have the same length, got {len(images)}, {len(paths)} and "
                         f"{None if titles is None else len(titles)}.")
    targets = [check_png_path(path, f"paths[{number}]") for number, path in enumerate(paths)]
    transforms = create_image_transforms(model, input_size=input_size)
    mean = torch.tensor(transforms.data_config["mean"])[:, None, None]
    std = torch.tensor(transforms.data_config["std"])[:, None, None]
    device = next(model.parameters()).device
    pixel_values = torch.stack([transforms.eval(decode_image(image)) for image in images]).to(device)
    maps = compute_transport_maps(model, pixel_values)
    model_views = (pixel_values.cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # undo Normalize
    return [
        plot_transport_map(view, weights, assignments, maps.grid_hw, target,
                           title=None if titles is None else titles[number])
        for number, (view, weights, assignments, target) in enumerate(
            zip(model_views, maps.weights, maps.assignments, targets, strict=True))
    ]
