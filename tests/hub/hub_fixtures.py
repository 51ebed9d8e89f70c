"""Constants and helpers shared by the hub tests (fixtures are in conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gsp_hub.data.embedded import FASHION_MNIST_SUBSET_PATH

IMAGE_SIZE = 64
BACKBONE = "test_resnet"  # timm's tiny test ResNet (0.4M parameters): a 2x2 map of 96-d features at 64 px
# what resolve_model_data_config must give for the export (the backbone's preprocessing at the trained size)
PREPROCESSING = dict(
    input_size=(3, IMAGE_SIZE, IMAGE_SIZE),
    interpolation="bilinear",
    crop_pct=0.95,
    crop_mode="center",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)
REPO_ID = "gsp-hub-tests/gsp-test-resnet-fmnist"
REVISION = "0123456789abcdef0123456789abcdef01234567"
METRICS = {"recall@1": 0.6125, "recall@2": 0.74, "map@r": 0.2831, "r_precision": 0.3577}
DATASET = {"id": "fashion-mnist", "split": "test", "name": "Fashion-MNIST subset (test classes 5-9)"}
RECIPE = {
    "model": "metric_net",
    "backbone": BACKBONE,
    "loss": "multi_similarity+zsr",
    "lr": 1e-3,
    "steps": 3,
    "batch_size": 16,
}


def fashion_images(split: str, per_class: int, classes: range) -> tuple[torch.Tensor, torch.Tensor]:
    """Real Fashion-MNIST images from the embedded subset: (n, 3, 64, 64) in [-1, 1] and labels (n,)."""
    data = np.load(FASHION_MNIST_SUBSET_PATH)
    images, labels = data[f"{split}_images"], data[f"{split}_labels"]
    index = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes])
    x = torch.from_numpy(images[index]).float().div(127.5).sub(1).unsqueeze(1).expand(-1, 3, -1, -1)
    return F.interpolate(x, size=IMAGE_SIZE, mode="bilinear", align_corners=False), torch.from_numpy(
        labels[index]
    ).long()


def build_hf_cache(export: Path, cache: Path, repo_id: str = REPO_ID) -> Path:
    """Lay ``export`` out as the Hugging Face cache would after a download: refs/main + snapshots/<rev>/."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(export, repo / "snapshots" / REVISION)
    return cache
