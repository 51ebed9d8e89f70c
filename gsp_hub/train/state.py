"""Training progress and the checkpoint files gsp_hub adds to an accelerate checkpoint.

``accelerator.save_state`` stores the model, optimizer and RNG states. The rest — where the run is
(:class:`RunState`), the loss module (ZSR class embeddings, proxies, the cross-batch memory and its queue position)
and the callbacks (the prototype warm-up memory) — goes into the same folder as ``gsp_hub_state.safetensors``
(tensors) and ``gsp_hub_state.json`` (everything else). No pickle is added: accelerate's
``register_for_checkpointing`` would store these objects as pickles and reload them with ``weights_only=False``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import safetensors.torch
import torch

from gsp_hub.io import atomic_file, atomic_write_text

__all__ = ["STATE_FILE_STEM", "RunState", "Stateful", "load_training_state", "save_training_state"]

STATE_FILE_STEM = "gsp_hub_state"


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


@dataclass
class RunState:
    """Where a run is: ``epoch`` and ``batch_in_epoch`` (micro-batches of that epoch already consumed), ``step``
    (optimizer steps done), the evaluation ``history``, the ``best`` one (that chose the exported model), the ``initial``
    (untrained) evaluation, the training loss accumulated since the last evaluation, and whether a callback asked the
    run to stop."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    initial: dict[str, float] | None = None
    loss_sum: float = 0.0
    loss_count: int = 0
    stop_requested: bool = False

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def save_training_state(directory: str | os.PathLike[str], objects: Mapping[str, Stateful]) -> None:
    """Write every object's ``state_dict`` into ``directory`` (tensors to safetensors, the rest to JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for name, obj in objects.items():
        values[name] = {}
        for key, value in obj.state_dict().items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                values[name][key] = value
    directory = Path(directory)
    with atomic_file(directory / f"{STATE_FILE_STEM}.safetensors") as temp:
        safetensors.torch.save_file(tensors, str(temp))
    atomic_write_text(directory / f"{STATE_FILE_STEM}.json", json.dumps(values, indent=1))


def load_training_state(directory: str | os.PathLike[str], objects: Mapping[str, Stateful]) -> None:
    """Restore the objects saved by :func:`save_training_state` (same names) from ``directory``."""
    directory = Path(directory)
    tensor_file, json_file = directory / f"{STATE_FILE_STEM}.safetensors", directory / f"{STATE_FILE_STEM}.json"
    if not (tensor_file.is_file() and json_file.is_file()):
        raise FileNotFoundError(
            f"checkpoint {directory} lacks {tensor_file.name} / {json_file.name}: it was not written by "
            "`gsp-hub train` or its save was interrupted; resume from an earlier checkpoint folder instead."
        )
    values = json.loads(json_file.read_text(encoding="utf-8"))
    tensors = safetensors.torch.load_file(str(tensor_file))
    missing = sorted(set(objects) - set(values))
    if missing:
        raise ValueError(f"checkpoint {directory} has no state for {missing}; was it written by another kind of run?")
    for name, obj in objects.items():
        state = dict(values[name])
        prefix = f"{name}/"
        state.update({key[len(prefix):]: tensor for key, tensor in tensors.items() if key.startswith(prefix)})
        obj.load_state_dict(state)
