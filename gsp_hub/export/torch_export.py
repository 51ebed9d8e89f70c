"""``torch.export`` archive (.pt2) of any image model, checked by reloading it, and a safe loader.

The archive holds the exported program with a dynamic batch axis (``torch.export.save``) and the gsp_hub metadata
(architecture, model args, preprocessing) as the extra file ``gsp_hub.json``. It runs without gsp_hub or timm::

    result = export_torch(model, "model.pt2", check_inputs=images)
    program = load_torch_export("model.pt2")          # torch.export.ExportedProgram
    embeddings = program.module()(images)             # any batch size

Safe loading: ``torch.export.load`` unpickles tensors that were saved as pickles and, when a payload fails to load
with ``weights_only=True``, retries with full unpickling. :func:`load_torch_export` therefore first checks the
archive: no payload may be marked as a pickle and every ``.pt`` member must load with ``weights_only=True``, so the
fallback is never reached.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import ExportedProgram

from gsp_hub.export.parity import DEFAULT_ATOL, ExportResult, Runner, checked_export_path, publish_checked
from gsp_hub.export.program import export_metadata, export_program, resolve_inputs

__all__ = ["METADATA_FILE", "export_torch", "load_torch_export", "read_torch_export_metadata", "torch_export_runner"]

METADATA_FILE = "gsp_hub.json"


def export_torch(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_inputs: Tensor | None = None,
    check_inputs: Tensor | None = None,
    atol: float = DEFAULT_ATOL,
) -> ExportResult:
    """Export ``model`` to a ``torch.export`` archive ``path`` (.pt2), dynamic batch axis, after a reload check.

    Args:
        model: module mapping images (B, C, H, W) to a tensor (or tuple of tensors); exported in eval mode.
        path: target ``.pt2`` file (replaced atomically, only by a checked export).
        example_inputs: images that fix C, H, W for tracing; default: N(0, 1) at the model's timm input size.
        check_inputs: images for the parity check; default: the examples. Must have the traced C, H, W.
        atol: largest accepted |reloaded export - eager| (default 1e-4).

    Raises:
        ExportError: a module cannot be traced (named), or the reloaded program disagrees with eager PyTorch.
    """
    checked_export_path(path, ".pt2", "torch-export")
    example, check = resolve_inputs(model, example_inputs, check_inputs)
    program = export_program(model, example)
    metadata = json.dumps(export_metadata(model, tuple(example.shape)))
    return publish_checked(
        model,
        path,
        format_name="torch-export",
        suffix=".pt2",
        write=lambda file: torch.export.save(program, file, extra_files={METADATA_FILE: metadata}),
        load=torch_export_runner,
        check_inputs=check,
        atol=atol,
    )


def _check_archive(file: Path) -> None:
    """Raise ValueError unless ``file`` is a .pt2 zip archive whose payloads all load without unpickling code."""
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{file} is not a torch.export archive (not a zip file: {error}); re-export it.") from error
    with archive:
        for member in archive.namelist():
            if member.endswith("_config.json"):
                config = json.loads(archive.read(member)).get("config", {})
                pickled = sorted(name for name, payload in config.items() if payload.get("use_pickle"))
                if pickled:
                    raise ValueError(
                        f"{file} stores {pickled[:3]} as pickles ({member}); gsp_hub loads only archives "
                        "whose tensors are raw buffers. Re-export the model with gsp_hub.export.export_torch."
                    )
            elif member.endswith(".pt"):
                try:
                    torch.load(io.BytesIO(archive.read(member)), weights_only=True)
                except Exception as error:  # noqa: BLE001  (the unpickler raises many types)
                    raise ValueError(
                        f"{file} member {member} does not load with weights_only=True ({error}); refusing to "
                        "unpickle it. Re-export the model with gsp_hub.export.export_torch."
                    ) from error


def load_torch_export(path: str | os.PathLike[str]) -> ExportedProgram:
    """Load a .pt2 archive written by :func:`export_torch` (or ``torch.export.save``) after a safety check."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"torch.export archive {file} not found; write one with gsp_hub.export.export_torch.")
    _check_archive(file)
    try:
        return torch.export.load(file)
    except Exception as error:  # noqa: BLE001  (deserialisation raises many types)
        raise ValueError(f"{file} is not a loadable torch.export archive ({error}); re-export it.") from error


def read_torch_export_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The gsp_hub metadata (architecture, model_args, data_config, ...) of a .pt2 archive, or {} if it has none."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"torch.export archive {file} not found.")
    _check_archive(file)
    with zipfile.ZipFile(file) as archive:
        member = next((name for name in archive.namelist() if name.endswith(f"/extra/{METADATA_FILE}")), None)
        return json.loads(archive.read(member)) if member else {}


def torch_export_runner(path: str | os.PathLike[str]) -> Runner:
    """images (B, C, H, W) -> outputs of the program loaded from ``path``."""
    module = load_torch_export(path).module()

    def run(images: Tensor) -> Any:
        with torch.no_grad():
            return module(images)

    return run
