"""The ``onnx`` and ``torch-export`` formats of `gsp-hub export` (the command itself lives in gsp_hub.hub.commands).

:data:`FORMAT_WRITERS` maps a format name to a writer ``(model, args) -> Path`` for ``EXPORT_FORMATS``, and
:func:`add_export_arguments` adds their options to the ``export`` parser::

    gsp-hub export runs/gsp-r50 model.onnx --format onnx --parity-images gallery/
    gsp-hub export hf-hub:org/gsp-r50 deploy/ --format torch-export --input-size 224   # -> deploy/model.pt2

OUTPUT is the file to write (``.onnx`` / ``.pt2``) or a folder, which receives ``model.onnx`` / ``model.pt2``. The
parity check runs on the first ``--parity-count`` images of ``--parity-images`` (a folder of image files, through
the model's timm eval transform), else on reproducible N(0, 1) images; the measured max |exported - eager| is
printed and the file is written only if it is within ``--atol``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gsp_hub.checks import check_int

if TYPE_CHECKING:  # torch is imported by the writers only: `gsp-hub --help` stays instant
    from torch import Tensor, nn

__all__ = ["FORMAT_WRITERS", "add_export_arguments", "parity_images"]


def parity_images(model: nn.Module, folder: str | Path, count: int, input_size: int | None) -> Tensor:
    """The first ``count`` images of ``folder`` (sorted, recursive) through the model's eval transform: (B, C, H, W)."""
    import timm.data
    import torch

    from gsp_hub.index.embedding import gallery_items, model_data_config

    check_int("--parity-count", count, minimum=1)
    items = gallery_items(folder)[:count]
    transform = timm.data.create_transform(**model_data_config(model, input_size), is_training=False)
    return torch.stack([transform(item.image()) for item in items])


def _target(output: Path, suffix: str) -> Path:
    output = Path(output)
    return output if output.suffix == suffix else output / f"model{suffix}"


def _writer(format_name: str, suffix: str) -> Callable[[Any, argparse.Namespace], Path]:
    def write(model: nn.Module, args: argparse.Namespace) -> Path:
        from gsp_hub.export import default_example_inputs, export_onnx, export_torch

        export = export_onnx if format_name == "onnx" else export_torch
        examples = default_example_inputs(model, batch_size=2, input_size=args.input_size)
        checks = None
        if args.parity_images is not None:
            checks = parity_images(model, args.parity_images, args.parity_count, args.input_size)
        result = export(model, _target(args.output, suffix), example_inputs=examples, check_inputs=checks,
                        atol=args.atol)
        print(result)
        return result.path

    write.__name__ = f"write_{suffix.lstrip('.')}"
    write.__doc__ = f"`gsp-hub export --format {format_name}`: a parity-checked {suffix} file."
    return write


FORMAT_WRITERS: dict[str, Callable[[Any, argparse.Namespace], Path]] = {
    "onnx": _writer("onnx", ".onnx"),
    "torch-export": _writer("torch-export", ".pt2"),
}


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the onnx / torch-export formats (``--input-size`` is the export command's own option)."""
    group = parser.add_argument_group("onnx / torch-export")
    group.add_argument("--parity-images", type=Path,
                       help="folder of images for the parity check (default: N(0, 1) images)")
    group.add_argument("--parity-count", type=int, default=8, help="images used for the parity check (default 8)")
    group.add_argument("--atol", type=float, default=1e-4,
                       help="largest accepted |exported - eager| (default 1e-4); nothing is written above it")
