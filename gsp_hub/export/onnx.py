"""ONNX export of any image model (MetricNet with any pooling, timm models, distilled students), checked by onnxruntime.

Exporter: torch 2.14's ``torch.onnx.export(..., dynamo=True)`` (onnxscript), fed with our own ``torch.export``
program (:func:`~gsp_hub.export.program.export_program`). The legacy TorchScript exporter (``dynamo=False``) also
runs on these models but is deprecated ("will be removed") and traces Python booleans as constants, so it is not used.

The file is self-contained (weights inside, no external data; fine below the 2 GB protobuf limit), has one input
``images`` (batch, C, H, W) float32 with a symbolic ``batch`` axis and one output ``embeddings`` (batch, D) —
``logits`` for a model with a classifier — and carries the preprocessing as ONNX metadata (``data_config``:
input_size, mean, std, interpolation, crop_pct; plus ``architecture``, ``model_args``, ``gsp_hub_version``).
Usage::

    result = export_onnx(model, "model.onnx", check_inputs=images)   # images: (B, 3, H, W), model's transform
    print(result)            # onnx export written to .../model.onnx: max |exported - eager| = 6.0e-08 (...)
    session = load_onnx_session("model.onnx")
    embeddings = session.run(None, {"images": images.numpy()})[0]
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.export import ExportedProgram

from gsp_hub.export.parity import DEFAULT_ATOL, ExportResult, Runner, checked_export_path, publish_checked
from gsp_hub.export.program import (
    BATCH_AXIS,
    ExportError,
    export_metadata,
    export_program,
    resolve_inputs,
)

__all__ = ["INPUT_NAME", "export_onnx", "load_onnx_session", "onnx_runner"]

INPUT_NAME = "images"
_FAILED_NODE = re.compile(r"translating node %(\S+)")


def _output_name(model: nn.Module) -> str:
    return "logits" if getattr(model, "num_classes", 0) else "embeddings"


def _failing_module(program: ExportedProgram, error: BaseException) -> str:
    """'module <name> (<Class>)' of the graph node named in an ONNX translation error, or 'the model'."""
    match = _FAILED_NODE.search(str(error))
    if match is None:
        return "the model"
    for node in program.run_decompositions().graph.nodes:
        if node.name == match.group(1):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            if stack:
                name, module_type = stack[-1]
                class_name = str(getattr(module_type, "__name__", module_type)).rsplit(".", 1)[-1]
                return f"module {name!r} ({class_name}), operator {node.target}"
            return f"operator {node.target}"
    return "the model"


def _to_onnx(program: ExportedProgram, output_name: str, opset_version: int | None) -> Any:
    """``torch.onnx.ONNXProgram`` of ``program``; its batch axis is named ``batch`` on every value that has it."""
    try:
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[output_name],
            opset_version=opset_version,
            verbose=False,
        )
    except Exception as error:  # noqa: BLE001  (torch.onnx raises ConversionError and its internal errors)
        where = _failing_module(program, error)
        summary = str(error).split("## Exception summary", 1)[-1].strip().splitlines()
        cause = next((line for line in summary if "No ONNX function" in line or "Error" in line), summary[0])
        raise ExportError(
            f"ONNX cannot express {where}: {cause.strip()}\nThe torch.export program was fine; use the "
            "torch-export format for this model, or replace the operator in that module."
        ) from error
    symbols = {str(symbol) for symbol in program.range_constraints}
    graph = onnx_program.model.graph
    values = [*graph.inputs, *graph.outputs, *(value for node in graph for value in node.outputs)]
    for value in values:
        if value.shape is not None:
            for axis, dim in enumerate(value.shape):
                if str(dim) in symbols:
                    value.shape[axis] = BATCH_AXIS
    return onnx_program


def load_onnx_session(path: str | os.PathLike[str]) -> Any:
    """An ``onnxruntime.InferenceSession`` (CPU) of an ONNX file, with clear errors for missing / invalid files."""
    import onnxruntime

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"ONNX file {file} not found; write one with gsp_hub.export.export_onnx.")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: constant-folding notes about CastLike are harmless
    try:
        return onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001  (onnxruntime raises its own Fail / InvalidProtobuf types)
        raise ValueError(f"{file} is not a valid ONNX model ({error}); re-export it.") from error


def onnx_runner(path: str | os.PathLike[str]) -> Runner:
    """images (B, C, H, W) -> list of numpy outputs, run by onnxruntime on the ONNX file ``path``."""
    session = load_onnx_session(path)
    input_name = session.get_inputs()[0].name

    def run(images: Tensor) -> list[np.ndarray]:
        return session.run(None, {input_name: images.detach().cpu().float().numpy()})

    return run


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_inputs: Tensor | None = None,
    check_inputs: Tensor | None = None,
    atol: float = DEFAULT_ATOL,
    opset_version: int | None = None,
) -> ExportResult:
    """Export ``model`` to the ONNX file ``path`` with a dynamic batch axis, after an onnxruntime parity check.

    Args:
        model: module mapping images (B, C, H, W) to a tensor (or tuple of tensors); exported in eval mode.
        path: target ``.onnx`` file (replaced atomically, only by a checked export).
        example_inputs: images that fix C, H, W for tracing; default: N(0, 1) at the model's timm input size.
        check_inputs: images for the parity check (real, transformed images recommended); default: the examples.
        atol: largest accepted |onnxruntime - eager| (default 1e-4).
        opset_version: ONNX opset (default: torch's, 20 for torch 2.14).

    Returns:
        :class:`~gsp_hub.export.parity.ExportResult` with the measured max abs difference.

    Raises:
        ExportError: a module cannot be traced or translated (named), or the parity check fails.
    """
    checked_export_path(path, ".onnx", "onnx")
    example, check = resolve_inputs(model, example_inputs, check_inputs)
    program = export_program(model, example)
    onnx_program = _to_onnx(program, _output_name(model), opset_version)
    onnx_program.model.metadata_props.update(export_metadata(model, tuple(example.shape)))
    return publish_checked(
        model,
        path,
        format_name="onnx",
        suffix=".onnx",
        write=lambda file: onnx_program.save(file, external_data=False),
        load=onnx_runner,
        check_inputs=check,
        atol=atol,
    )
