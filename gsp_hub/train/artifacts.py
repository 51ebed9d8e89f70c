"""Files a training run writes besides the accelerate checkpoints, each written atomically.

Layout of a run folder::

    <output_dir>/
      model/               best model by MAP@R, Hub format (config.json, model.safetensors, README.md; a GSP model's
                           card also shows transport_map_*.png, its pooling weights on test images)
      metrics.json         best, last and initial metrics, the per-evaluation history and the raw-pixel baseline
      train_config.yaml    the resolved TrainConfig
      checkpoints/         accelerate save_state folders (checkpoint_<i>), for --resume
      logs/                tensorboard event files
      curves.png           training loss and R@1 / MAP@R per epoch
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["METRICS_FILE_NAME", "MODEL_DIR_NAME", "export_model"]

MODEL_DIR_NAME = "model"
METRICS_FILE_NAME = "metrics.json"


def export_model(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    metrics: Mapping[str, float],
    dataset: Mapping[str, Any],
    recipe: Mapping[str, Any],
    data_config: Mapping[str, Any],
    selected_by: str | None = None,
    card: Mapping[str, Any] | None = None,
    files: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Path:
    """Write ``model`` (an unwrapped timm model) as a Hub folder replacing ``directory`` atomically.

    The folder loads with ``gsp_hub.hub.from_pretrained(directory)`` and ``timm.create_model('local-dir:...')``;
    ``data_config`` (input size, mean, std, interpolation, crop) becomes its ``pretrained_cfg`` preprocessing;
    ``selected_by`` (how the checkpoint was chosen, e.g. by a validation metric) is stated on the card; ``card``
    adds card options (``baselines``, ``target_mass``, ``figures``, ... of :func:`gsp_hub.hub.save_pretrained`) and
    ``files`` the files they name (file name -> path).
    """
    from gsp_hub.hub import save_pretrained

    return save_pretrained(
        model,
        directory,
        metrics=metrics,
        dataset=dataset,
        card_extra={"recipe": dict(recipe), **({"selected_by": selected_by} if selected_by else {}), **(card or {})},
        data_config={key: data_config[key] for key in ("input_size", "interpolation", "mean", "std", "crop_pct",
                                                        "crop_mode") if key in data_config},
        files=files,
    )
