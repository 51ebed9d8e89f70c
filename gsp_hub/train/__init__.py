"""Metric-learning training on accelerate: config, loop, callbacks and the `gsp-hub train` / `eval` commands.

The loop and its heavy dependencies (accelerate, datasets, pytorch-metric-learning) load on first use of one of
its names, so that importing the configuration (e.g. to build the command line) stays light.
"""

from gsp_hub.lazy_exports import lazy_exports
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "gsp_hub.train.callbacks": ("BatchOutputs", "Callback", "PrototypeInitCallback", "needs_prototype_init"),
        "gsp_hub.train.loop": (
            "EmbeddingsAndAttributes",
            "Trainer",
            "compute_loss",
            "create_loss_module",
            "create_model",
            "create_optimizer",
            "embed_split",
            "learning_rate_factor",
            "train",
        ),
    },
)
