"""Metric-learning training on accelerate: config, loop, callbacks and the `gsp-hub train` / `eval` commands.

The loop and its heavy dependencies (accelerate, datasets, pytorch-metric-learning) load on first use of one of
its names, so that importing the configuration (e.g. to build the command line) stays light.
"""

from importlib import import_module
from typing import Any

from gsp_hub.train.config import CONFIG_FILE_NAME, TrainConfig

__all__ = [
    "CONFIG_FILE_NAME",
    "BatchOutputs",
    "Callback",
    "EmbeddingsAndAttributes",
    "PrototypeInitCallback",
    "TrainConfig",
    "Trainer",
    "compute_loss",
    "create_loss_module",
    "create_model",
    "create_optimizer",
    "embed_split",
    "learning_rate_factor",
    "needs_prototype_init",
    "train",
]

_LAZY = {
    "BatchOutputs": "gsp_hub.train.callbacks",
    "Callback": "gsp_hub.train.callbacks",
    "PrototypeInitCallback": "gsp_hub.train.callbacks",
    "needs_prototype_init": "gsp_hub.train.callbacks",
    **{name: "gsp_hub.train.loop" for name in (
        "EmbeddingsAndAttributes", "Trainer", "compute_loss", "create_loss_module", "create_model", "create_optimizer",
        "embed_split", "learning_rate_factor", "train",
    )},
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gsp_hub.train' has no attribute {name!r}")
