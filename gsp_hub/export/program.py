"""Trace a model into a ``torch.export`` program with a dynamic batch axis; the shared first step of every export.

Both deployment formats start here: :func:`export_program` runs ``torch.export.export`` (non-strict) on an
eval-mode copy of the call with the batch axis of the images symbolic, so one file serves any batch size. When tracing
fails, :func:`export_program` re-traces the submodules that ran on the example batch (using the inputs recorded by
forward hooks) and raises an :class:`ExportError` naming the innermost module that cannot be exported and why.

The GSP solver exports as is: its safeguarded Newton root solve runs a fixed number of iterations (``GSP.iters``,
16 by default) with ``torch.where`` instead of Python branches, so the exported graph performs exactly the eager
computation.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import timm.data
import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from gsp_hub.checks import check_int

__all__ = [
    "BATCH_AXIS",
    "ExportError",
    "check_images",
    "default_example_inputs",
    "eval_mode",
    "export_metadata",
    "export_program",
    "resolve_inputs",
]

BATCH_AXIS = "batch"
MAX_BATCH = 65536
_ERROR_LINES = 4
_CAUSE_MARKER = "The following call raised this error:"


class ExportError(RuntimeError):
    """A model cannot be exported, or its export disagrees with eager PyTorch; the message names the module."""


def check_images(images: Any, name: str) -> Tensor:
    """Return ``images`` if it is a finite floating (B, C, H, W) tensor with B >= 1, else raise naming ``name``."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images (B, C, H, W), got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[0] < 1 or not images.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point image batch (B, C, H, W) with B >= 1, got dtype {images.dtype} and "
            f"shape {tuple(images.shape)}; build it with the model's timm transform (see default_example_inputs)."
        )
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or inf values; pass normalised images.")
    return images


def default_example_inputs(
    model: nn.Module, batch_size: int = 2, input_size: int | None = None, seed: int = 0
) -> Tensor:
    """A reproducible N(0, 1) batch (batch_size, C, H, W) at the model's timm input size (or ``input_size``)."""
    check_int("batch_size", batch_size, minimum=1)
    channels, height, width = timm.data.resolve_data_config({}, model=model)["input_size"]
    if input_size is not None:
        height = width = check_int("input_size", input_size, minimum=1, meaning="side of square images")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, channels, height, width, generator=generator)


def resolve_inputs(
    model: nn.Module, example_inputs: Tensor | None, check_inputs: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(tracing images, parity images): defaults are :func:`default_example_inputs` and the tracing images."""
    if example_inputs is None:
        example = default_example_inputs(model)
    else:
        example = check_images(example_inputs, "example_inputs")
    check = example if check_inputs is None else check_images(check_inputs, "check_inputs")
    if check.shape[1:] != example.shape[1:]:
        raise ValueError(
            f"check_inputs have shape (B, {', '.join(map(str, check.shape[1:]))}) but the export is traced at "
            f"(B, {', '.join(map(str, example.shape[1:]))}); only the batch axis is dynamic. Use one image size."
        )
    return example, check


def export_metadata(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """String metadata stored in every export: gsp_hub version, architecture, model args and preprocessing."""
    import gsp_hub

    pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    model_args = getattr(model, "pretrained_model_args", None) or getattr(model, "_model_args", None) or {}
    data_config = timm.data.resolve_data_config({"input_size": tuple(input_shape[1:])}, model=model)
    metadata = {
        "gsp_hub_version": gsp_hub.__version__,
        "architecture": str(pretrained_cfg.get("architecture") or type(model).__name__),
        "model_args": model_args,
        "data_config": data_config,
        "input": f"images ({BATCH_AXIS}, {', '.join(map(str, input_shape[1:]))}) float32, normalised with the "
        "data_config mean / std",
    }
    return {key: value if isinstance(value, str) else json.dumps(value, default=str) for key, value in metadata.items()}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with gradients off for the duration; restore its training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _trace(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic_batch: bool) -> ExportedProgram:
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = ({0: Dim(BATCH_AXIS, min=1, max=MAX_BATCH)},)
    return torch.export.export(module, args, kwargs or None, dynamic_shapes=dynamic_shapes, strict=False)


def _short(error: BaseException) -> str:
    """First lines of a tracing error, plus the user code line torch reports as the cause when present."""
    text = str(error).strip()
    lines = [line for line in text.split(_CAUSE_MARKER, 1)[0].splitlines() if line.strip()]
    summary = "\n    ".join(lines[:_ERROR_LINES]) + ("\n    ..." if len(lines) > _ERROR_LINES else "")
    if _CAUSE_MARKER in text:
        call = [line.strip() for line in text.split(_CAUSE_MARKER, 1)[1].splitlines() if line.strip()][:2]
        summary += "\n  raised at: " + " -> ".join(call)
    return f"{type(error).__name__}: {summary}"


def _recorded_calls(model: nn.Module, images: Tensor) -> dict[str, tuple[tuple[Any, ...], dict[str, Any]]]:
    """The (args, kwargs) of the first call of every submodule during one eager forward on ``images``."""
    calls: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            calls.setdefault(name, (args, kwargs))

        return hook

    handles = [
        module.register_forward_pre_hook(recorder(name), with_kwargs=True)
        for name, module in model.named_modules()
        if name
    ]
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _locate_failure(model: nn.Module, images: Tensor, error: BaseException) -> tuple[str, nn.Module, BaseException]:
    """Descend from the root to the innermost submodule whose own export fails on its recorded (static) inputs."""
    try:
        calls = _recorded_calls(model, images)
    except Exception:  # the eager forward itself fails: nothing finer to report than the root
        return "", model, error
    name, module = "", model
    while True:
        for child_name, child in module.named_children():
            full_name = f"{name}.{child_name}" if name else child_name
            if full_name not in calls:
                continue
            try:
                _trace(child, *calls[full_name], dynamic_batch=False)
            except Exception as child_error:  # noqa: BLE001  (any tracing failure is what we look for)
                name, module, error = full_name, child, child_error
                break
        else:
            return name, module, error


def export_program(model: nn.Module, example_inputs: Tensor) -> ExportedProgram:
    """``torch.export`` program of ``model(images)`` in eval mode, batch axis dynamic (1 ... 65536).

    Args:
        model: any module whose forward takes an image batch (B, C, H, W) (MetricNet, timm models, students).
        example_inputs: (B, C, H, W) images used for tracing; a single image is repeated to B = 2 because
            torch.export specialises a batch of 1.

    Raises:
        ExportError: naming the innermost submodule (dotted name and class) that cannot be traced, with the cause.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    images = check_images(example_inputs, "example_inputs")
    if images.shape[0] == 1:
        images = images.expand(2, -1, -1, -1).contiguous()
    with eval_mode(model):
        try:
            return _trace(model, (images,), {}, dynamic_batch=True)
        except Exception as error:  # noqa: BLE001  (torch.export raises many types; re-raised with the culprit)
            name, module, cause = _locate_failure(model, images, error)
    where = f"module {name!r} ({type(module).__name__})" if name else f"the model ({type(model).__name__})"
    raise ExportError(
        f"torch.export cannot trace {where}: {_short(cause)}\n"
        "Exportable modules use no Python control flow on tensor values (use torch.where), no .item() / "
        "data-dependent shapes, and only standard ATen operators."
    ) from cause
