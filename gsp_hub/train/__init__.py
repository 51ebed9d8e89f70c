"""Training on accelerate: one engine, three tasks, callbacks, configs and the `gsp-hub train` / `eval` / `distill`
commands.

* :class:`Trainer` (:mod:`gsp_hub.train.engine`) runs a :class:`Task` with optional user :class:`Callback` objects;
* :class:`MetricLearningTask` / :func:`train` (:class:`TrainConfig`), :class:`DistillationTask` / :func:`distill`
  (:class:`DistillConfig`), :class:`CachedHeadTask` / :func:`train_cached_head` (:class:`CachedHeadConfig`, a
  head on cached feature maps: the zoo recipes).

The engine and its heavy dependencies (accelerate, datasets, pytorch-metric-learning) load on first use of one of
these names, so that importing the configuration (e.g. to build the command line) stays light.
"""

from gsp_hub.lazy_exports import lazy_exports
from gsp_hub.train.config import CONFIG_FILE_NAME, TrainConfig
from gsp_hub.train.distill import DistillConfig

__all__ = [
    "CONFIG_FILE_NAME",
    "BatchOutputs",
    "CachedHeadConfig",
    "CachedHeadTask",
    "Callback",
    "DistillConfig",
    "DistillationTask",
    "EmbeddingsAndAttributes",
    "MetricLearningTask",
    "PrototypeInitCallback",
    "Task",
    "TrainConfig",
    "Trainer",
    "TrainingStep",
    "distill",
    "embed_split",
    "embed_split_to_disk",
    "learning_rate_factor",
    "needs_prototype_init",
    "train",
    "train_cached_head",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "gsp_hub.train.cached_head": ("CachedHeadConfig", "CachedHeadTask", "train_cached_head"),
        "gsp_hub.train.callbacks": ("BatchOutputs", "Callback", "PrototypeInitCallback", "needs_prototype_init"),
        "gsp_hub.train.distillation": ("DistillationTask", "distill"),
        "gsp_hub.train.disk_embeddings": ("embed_split_to_disk",),
        "gsp_hub.train.engine": ("Task", "Trainer", "TrainingStep", "learning_rate_factor"),
        "gsp_hub.train.evaluation": ("embed_split",),
        "gsp_hub.train.metric_learning": ("EmbeddingsAndAttributes", "MetricLearningTask", "train"),
    },
)
