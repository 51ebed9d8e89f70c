"""Publish an export only after it reproduces eager PyTorch: write to a temp file, run it, compare, then rename.

:func:`publish_checked` is the common last step of every format. The export is written to a hidden temp file next
to the target, loaded back by the format's own runtime (onnxruntime, ``torch.export.load``), run on the check
images (the given batch and its first image alone, which exercises the dynamic batch axis) and compared with the
eager model. Only if the largest absolute difference is within ``atol`` is the temp file renamed over the target
(``os.replace``, atomic); otherwise nothing is written and :class:`~gsp_hub.export.program.ExportError` says by how
much the export is off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from gsp_hub.checks import check_float
from gsp_hub.export.program import ExportError, check_images, eval_mode
from gsp_hub.io import atomic_file

__all__ = ["DEFAULT_ATOL", "ExportResult", "checked_export_path", "max_abs_difference", "publish_checked"]

DEFAULT_ATOL = 1e-4

Runner = Callable[[Tensor], Any]  # images (B, C, H, W) -> the exported model's outputs (tensors or arrays)


@dataclass(frozen=True)
class ExportResult:
    """An export written to ``path`` and the parity measured before it was published.

    max_abs_diff: largest |exported - eager| over every output element of every checked batch.
    checked_batch_sizes: the batch sizes compared (the check images, then a single image).
    """

    path: Path
    format: str
    max_abs_diff: float
    checked_batch_sizes: tuple[int, ...]

    def __str__(self) -> str:
        sizes = ", ".join(map(str, self.checked_batch_sizes))
        return (
            f"{self.format} export written to {self.path}: max |exported - eager| = {self.max_abs_diff:.2e} "
            f"(batch sizes {sizes})"
        )


def max_abs_difference(expected: Any, actual: Any) -> float:
    """Largest |expected - actual| over the tensor / array leaves of two outputs of the same structure (NaN -> inf)."""
    expected_leaves = [torch.as_tensor(leaf).detach() for leaf in tree_leaves(expected)]
    actual_leaves = [torch.as_tensor(leaf).detach() for leaf in tree_leaves(actual)]
    if len(expected_leaves) != len(actual_leaves):
        raise ExportError(
            f"the export returns {len(actual_leaves)} outputs but eager PyTorch {len(expected_leaves)}; "
            "the export is broken."
        )
    worst = 0.0
    for index, (reference, candidate) in enumerate(zip(expected_leaves, actual_leaves, strict=True)):
        if tuple(reference.shape) != tuple(candidate.shape):
            raise ExportError(
                f"output {index} has shape {tuple(candidate.shape)} in the export but {tuple(reference.shape)} "
                "in eager PyTorch; the export is broken."
            )
        if reference.numel():
            difference = (reference.double() - candidate.double()).abs().max().item()
            worst = max(worst, difference if math.isfinite(difference) else math.inf)
    return worst


def checked_export_path(path: str | os.PathLike[str], suffix: str, format_name: str) -> Path:
    """``path`` as an absolute Path if it names a file ending in ``suffix`` (not an existing directory)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path ending in {suffix}, got {type(path).__name__}.")
    target = Path(path).absolute()
    if target.is_dir():
        raise IsADirectoryError(f"path {target} is a directory; pass a file name, e.g. {target / ('model' + suffix)}.")
    if target.suffix != suffix:
        raise ValueError(f"path must end in {suffix} for the {format_name} format, got {target.name!r}.")
    return target


def publish_checked(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    format_name: str,
    suffix: str,
    write: Callable[[Path], None],
    load: Callable[[Path], Runner],
    check_inputs: Tensor,
    atol: float = DEFAULT_ATOL,
) -> ExportResult:
    """Write an export with ``write(temp_path)``, check ``load(temp_path)(images)`` against ``model(images)``, publish.

    Args:
        model: the eager model (run in eval mode, without gradients; its training flag is restored).
        path: target file; its folder is created. An existing file is replaced only by a checked export.
        format_name: shown in messages (``onnx``, ``torch-export``).
        suffix: required file extension (``.onnx``, ``.pt2``); the temp file has it too (torch.export checks it).
        write: writes the export to the given path.
        load: returns a runner images -> outputs for the written file.
        check_inputs: (B, C, H, W) images; parity is measured on them and on their first image alone.
        atol: largest accepted absolute difference.

    Raises:
        ExportError: the export's outputs differ from eager by more than ``atol`` (nothing is written).
    """
    check_float("atol", atol, minimum=0.0, meaning="largest accepted |exported - eager|")
    images = check_images(check_inputs, "check_inputs")
    batches = [images] if images.shape[0] == 1 else [images, images[:1]]
    target = checked_export_path(path, suffix, format_name)
    with atomic_file(target) as temp_path:
        write(temp_path)
        run = load(temp_path)
        with eval_mode(model):
            worst = max(max_abs_difference(model(batch), run(batch)) for batch in batches)
        if not worst <= atol:
            raise ExportError(
                f"the {format_name} export of {type(model).__name__} differs from eager PyTorch by up to {worst:.3g} "
                f"(atol {atol:g}); nothing was written to {target}. A large difference means an operator is "
                "translated wrongly; please report it with the model name."
            )
    return ExportResult(
        path=target,
        format=format_name,
        max_abs_diff=worst,
        checked_batch_sizes=tuple(int(batch.shape[0]) for batch in batches),
    )
